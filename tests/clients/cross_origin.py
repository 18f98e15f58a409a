"""Cross-origin requests from a real browser page (headless Chromium).

    cross_origin.py PORT PUT_URL GET_URL

serves a blank page at http://127.0.0.1:PORT/ (its own origin), opens it,
and from it `fetch`es a PUT of the text "from a browser" to PUT_URL and a
GET of GET_URL, as a web application on another site would. Prints one
JSON line: {"put": STATUS or "blocked", "get": BODY or "blocked",
"etag": the ETag header the page could read, or null}.
"""

import http.server
import json
import shutil
import sys
import threading

from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service

FETCHES = """
const [putUrl, getUrl, done] = arguments;
const out = {put: "blocked", get: "blocked", etag: null};
try {
  const r = await fetch(putUrl, {method: "PUT", body: "from a browser", headers: {"Content-Type": "text/plain"}});
  out.put = r.status;
} catch (_) {}
try {
  const r = await fetch(getUrl);
  out.get = await r.text();
  out.etag = r.headers.get("ETag");
} catch (_) {}
done(out);
"""


class Blank(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = b"<!doctype html><title>another site</title><p>another site"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def main():
    port, put_url, get_url = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Blank)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    options = Options()
    options.binary_location = shutil.which("chromium")
    for arg in ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"]:
        options.add_argument(arg)
    d = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    try:
        d.set_script_timeout(60)
        d.get(f"http://127.0.0.1:{port}/")
        # execute_async_script passes a callback as the last argument.
        script = "(async () => {" + FETCHES + "})(...arguments)"
        print(json.dumps(d.execute_async_script(script, put_url, get_url)))
    finally:
        d.quit()
        server.shutdown()


main()
