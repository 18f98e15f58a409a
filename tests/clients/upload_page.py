"""Drives an upload link's page in headless Chromium (selenium + chromedriver).

    upload_page.py upload URL SHOTS [--folder DIR] [--reload-at PERCENT] FILE...
        picks the files (and the folder), waits until the page shows the
        transfer's share link and prints `SHARE <href>`, `TEXT <the total
        progress line>` and `ELAPSED <seconds from picking to the share
        link>`; with --reload-at,
        reloads the page once the total progress reaches PERCENT and picks
        the same files again (the page resumes their parts).
    upload_page.py message URL SHOTS [FILE]
        opens the page (picks FILE if given) and prints its visible text
        once it settles.
    upload_page.py phone URL SHOTS
        on a phone-sized window: checks that nothing scrolls sideways and
        that the keyboard alone reaches the file picker first, drops two
        files made in the page (`a.txt`: "dropped a\n" x 1000, `b.bin`:
        300,000 bytes i % 251) on the drop zone as a drag
        and drop does, then tabs to "Copy link" and presses Enter; prints
        `SHARE <href>` and `COPIED <what the page says>`.

SHOTS is a folder of its own for this run: a screenshot of each state the
page goes through (opened, files picked and sending, reloaded, done, the
message it settles on) is saved there as NN-STATE.png, and one more as
failed.png when anything fails; the test keeps them as artifacts.
"""

import os
import shutil
import sys
import time

from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait


def browser():
    options = Options()
    options.binary_location = shutil.which("chromium")
    for arg in ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"]:
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)


class Shots:
    """Numbered screenshots of the page's states, in one folder."""

    def __init__(self, d, folder):
        self.d, self.folder, self.n = d, folder, 0
        os.makedirs(folder, exist_ok=True)

    def __call__(self, state):
        self.n += 1
        self.d.save_screenshot(os.path.join(self.folder, f"{self.n:02d}-{state}.png"))


def pick(d, files, folder):
    if files:
        d.find_element("css selector", "input#pick").send_keys("\n".join(files))
    if folder:
        d.find_element("css selector", "input#folder").send_keys(folder)


def progress(d):
    text = d.find_element("id", "total-text").text.strip().rstrip("%").strip()
    return int(text or 0)


def settled(d, new_page=lambda d: True):
    """Waits until the document a navigation loads answers: chromedriver may
    answer a navigation (a first load, or a refresh of a page with uploads
    in flight) before the page is attached, and a command sent then fails
    with "aborted by navigation", so commands are retried until it does."""
    WebDriverWait(d, 60, poll_frequency=0.2, ignored_exceptions=(WebDriverException,)).until(
        lambda d: d.execute_script("return document.readyState") == "complete" and new_page(d)
    )


def open_page(d, url):
    d.get(url)
    settled(d)


def reload(d):
    """Reloads the page and waits for the new one: no progress shown."""
    d.refresh()
    settled(d, lambda d: d.find_element("css selector", "input#pick") and progress(d) == 0)


# Two files built in the page and dropped on the drop zone: what a drag and
# drop from the desktop hands the page (a DataTransfer of Files).
DROP = """
const dt = new DataTransfer();
dt.items.add(new File(["dropped a\\n".repeat(1000)], "a.txt", {type: "text/plain"}));
const b = new Uint8Array(300000);
for (let i = 0; i < b.length; i++) b[i] = i % 251;
dt.items.add(new File([b], "b.bin"));
const zone = document.getElementById("drop");
for (const type of ["dragenter", "dragover", "drop"]) {
  zone.dispatchEvent(new DragEvent(type, {bubbles: true, cancelable: true, dataTransfer: dt}));
}
"""


def tab_to(d, element_id, limit=40):
    """Presses Tab until the element `element_id` has the focus."""
    for _ in range(limit):
        ActionChains(d).send_keys(Keys.TAB).perform()
        if d.execute_script("return document.activeElement && document.activeElement.id") == element_id:
            return
    raise AssertionError(f"Tab never reached #{element_id}")


def phone(d, url, shot):
    d.set_window_size(390, 844)
    open_page(d, url)
    shot("opened")
    wide = d.execute_script("return [document.documentElement.scrollWidth, window.innerWidth]")
    assert wide[0] <= wide[1], f"the page scrolls sideways on a phone: {wide}"
    # The first stop of the keyboard is the file picker (inside the drop zone).
    ActionChains(d).send_keys(Keys.TAB).perform()
    first = d.execute_script("return document.activeElement.id")
    assert first == "pick", f"the first Tab stop is #{first}, not the file picker"
    ring = d.execute_script("return getComputedStyle(document.getElementById('drop')).outlineStyle")
    assert ring != "none", "the focused drop zone shows no focus ring"
    d.execute_script(DROP)
    shot("dropped")
    WebDriverWait(d, 120, poll_frequency=0.25).until(
        lambda d: d.find_element("id", "share-link").get_attribute("href").find("/_share/") >= 0
    )
    shot("done")
    wide = d.execute_script("return [document.documentElement.scrollWidth, window.innerWidth]")
    assert wide[0] <= wide[1], f"the finished page scrolls sideways on a phone: {wide}"
    tab_to(d, "copy")
    ActionChains(d).send_keys(Keys.ENTER).perform()
    WebDriverWait(d, 10).until(lambda d: d.find_element("id", "copied").text.strip())
    shot("copied")
    print("SHARE", d.find_element("id", "share-link").get_attribute("href"))
    print("COPIED", d.find_element("id", "copied").text)


def main():
    mode, url, shots = sys.argv[1:4]
    args = sys.argv[4:]
    folder, reload_at = None, None
    if "--folder" in args:
        i = args.index("--folder")
        folder = args[i + 1]
        del args[i : i + 2]
    if "--reload-at" in args:
        i = args.index("--reload-at")
        reload_at = int(args[i + 1])
        del args[i : i + 2]
    files = [os.path.abspath(f) for f in args]
    d = browser()
    shot = Shots(d, shots)
    try:
        if mode == "phone":
            phone(d, url, shot)
            return
        open_page(d, url)
        shot("opened")
        if mode == "message":
            if files:
                pick(d, files, None)
                shot("picked")
                WebDriverWait(d, 60).until(
                    lambda d: d.find_element("id", "message").is_displayed()
                    or d.find_elements("css selector", "li .state")
                    and all(e.text not in ("waiting", "sending") for e in d.find_elements("css selector", "li .state"))
                )
            time.sleep(0.5)
            shot("message")
            print(d.find_element("tag name", "body").text)
            return
        started = time.monotonic()
        pick(d, files, folder)
        shot("sending")
        if reload_at is not None:
            WebDriverWait(d, 300, poll_frequency=0.2).until(lambda d: progress(d) >= reload_at)
            shot(f"at-{reload_at}-percent")
            reload(d)
            shot("reloaded")
            pick(d, files, folder)
            shot("resuming")
        WebDriverWait(d, 600, poll_frequency=0.25).until(
            lambda d: d.find_element("id", "share-link").get_attribute("href").find("/_share/") >= 0
        )
        elapsed = time.monotonic() - started
        shot("done")
        print("SHARE", d.find_element("id", "share-link").get_attribute("href"))
        print("ELAPSED", f"{elapsed:.3f}")
        print("TEXT", d.find_element("id", "total-text").text)
    except Exception:
        d.save_screenshot(os.path.join(shots, "failed.png"))
        print(d.find_element("tag name", "body").text, file=sys.stderr)
        raise
    finally:
        d.quit()


main()
