//! S3 list semantics (prefix, delimiter, max-keys, continuation) over keys
//! offered in sorted order, shared by the storage node and the gateway.

/// A resume point: every key up to and including this string is done.
///
/// After a common prefix the cursor is the prefix followed by the highest
/// code point, so that resuming skips every key below that prefix.
pub type Cursor = String;

/// What the caller should do after offering a key.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Offer the next key.
    Next,
    /// Skip ahead: offer only keys greater than this cursor.
    SkipPast(Cursor),
    /// The page is complete.
    Done,
}

/// One page of a listing being built.
#[derive(Debug)]
pub struct Listing<T> {
    prefix: String,
    delimiter: Option<String>,
    max_keys: usize,
    /// Objects on this page, in key order.
    pub objects: Vec<(String, T)>,
    /// Common prefixes on this page, in order.
    pub prefixes: Vec<String>,
    /// Whether keys remain after this page.
    pub truncated: bool,
    last: Option<Cursor>,
    /// A marker the listing resumes after: a common prefix up to it was
    /// already listed.
    after: Option<String>,
}

impl<T> Listing<T> {
    /// Starts a page. An empty delimiter counts as none, as in S3.
    pub fn new(prefix: &str, delimiter: Option<&str>, max_keys: usize) -> Self {
        Self {
            prefix: prefix.to_owned(),
            delimiter: delimiter.filter(|d| !d.is_empty()).map(str::to_owned),
            max_keys,
            objects: Vec::new(),
            prefixes: Vec::new(),
            truncated: false,
            last: None,
            after: None,
        }
    }

    /// Resumes after `marker` (a v1 marker, a v2 start-after or a key
    /// marker): keys up to it are not offered by the caller, and a common
    /// prefix that is not past it is not listed again.
    #[must_use]
    pub fn resuming_after(mut self, marker: &str) -> Self {
        self.after = Some(marker.to_owned()).filter(|m| !m.is_empty());
        self
    }

    fn len(&self) -> usize {
        self.objects.len() + self.prefixes.len()
    }

    /// Offers the next key (keys must come in ascending byte order, each
    /// greater than the last cursor).
    pub fn offer(&mut self, key: String, item: T) -> Step {
        let Some(rest) = key.strip_prefix(self.prefix.as_str()) else {
            // Sorted order: once past the prefix, nothing later matches.
            return if key.as_str() < self.prefix.as_str() {
                Step::Next
            } else {
                Step::Done
            };
        };
        if self.len() >= self.max_keys {
            // max-keys=0 asks for nothing and is never truncated.
            self.truncated = self.max_keys > 0;
            return Step::Done;
        }
        if let Some(d) = &self.delimiter
            && let Some(pos) = rest.find(d.as_str())
        {
            let common = format!("{}{}", self.prefix, &rest[..pos + d.len()]);
            let cursor = format!("{common}{}", char::MAX);
            if self.after.as_deref().is_some_and(|a| common.as_str() <= a) {
                return Step::SkipPast(cursor);
            }
            self.prefixes.push(common);
            self.last = Some(cursor.clone());
            return Step::SkipPast(cursor);
        }
        self.last = Some(key.clone());
        self.objects.push((key, item));
        Step::Next
    }

    /// The cursor to resume from on the next page, when truncated.
    pub fn next_cursor(&self) -> Option<&str> {
        if self.truncated {
            self.last.as_deref()
        } else {
            None
        }
    }
}

/// Encodes a cursor as an opaque continuation token.
pub fn encode_token(cursor: &str) -> String {
    hex::encode(cursor.as_bytes())
}

/// Decodes a continuation token; `None` when it was not made by [`encode_token`].
pub fn decode_token(token: &str) -> Option<Cursor> {
    String::from_utf8(hex::decode(token).ok()?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(
        keys: &[&str],
        prefix: &str,
        delim: Option<&str>,
        max: usize,
        after: Option<&str>,
    ) -> Listing<()> {
        let mut l = Listing::new(prefix, delim, max);
        let mut skip: Option<String> = after.map(str::to_owned);
        for k in keys {
            if skip.as_deref().is_some_and(|s| *k <= s) {
                continue;
            }
            match l.offer((*k).to_owned(), ()) {
                Step::Next => {}
                Step::SkipPast(c) => skip = Some(c),
                Step::Done => break,
            }
        }
        l
    }

    const KEYS: &[&str] = &["a/1", "a/2", "b", "c/x/1", "c/y", "d"];

    #[test]
    fn flat_and_prefix() {
        let l = run(KEYS, "", None, 1000, None);
        assert_eq!(l.objects.len(), 6);
        assert!(!l.truncated);
        let l = run(KEYS, "c/", None, 1000, None);
        let keys: Vec<_> = l.objects.iter().map(|o| o.0.as_str()).collect();
        assert_eq!(keys, ["c/x/1", "c/y"]);
    }

    #[test]
    fn delimiter_groups_common_prefixes() {
        let l = run(KEYS, "", Some("/"), 1000, None);
        assert_eq!(l.prefixes, ["a/", "c/"]);
        let keys: Vec<_> = l.objects.iter().map(|o| o.0.as_str()).collect();
        assert_eq!(keys, ["b", "d"]);
        let l = run(KEYS, "c/", Some("/"), 1000, None);
        assert_eq!(l.prefixes, ["c/x/"]);
        assert_eq!(l.objects[0].0, "c/y");
    }

    #[test]
    fn pages_resume_after_cursor() {
        let l = run(KEYS, "", Some("/"), 2, None);
        assert!(l.truncated);
        assert_eq!(l.prefixes, ["a/"]);
        assert_eq!(l.objects[0].0, "b");
        let token = encode_token(l.next_cursor().unwrap());
        let cursor = decode_token(&token).unwrap();
        let l = run(KEYS, "", Some("/"), 2, Some(&cursor));
        assert_eq!(l.prefixes, ["c/"]);
        assert_eq!(l.objects[0].0, "d");
        assert!(!l.truncated);
        assert!(decode_token("zz").is_none());
    }

    #[test]
    fn a_v1_marker_on_a_common_prefix_skips_it() {
        let mut l = Listing::new("", Some("/"), 10).resuming_after("a/");
        for k in ["a/1", "a/2", "b"] {
            if l.offer(k.to_owned(), ()) == Step::Done {
                break;
            }
        }
        assert!(l.prefixes.is_empty());
        assert_eq!(l.objects[0].0, "b");
    }
}
