//! MQTT topic filters as sets of topics: whether a filter matches a topic, whether one
//! filter covers another (every topic of the inner one is in the outer one), and whether
//! two overlap. The ACL decides subscriptions with these; `+` is one level, `#` the rest.

/// Whether `filter` matches the topic name `topic` (MQTT 3.1.1 §4.7).
pub fn matches(filter: &str, topic: &str) -> bool {
    let mut t = topic.split('/');
    for f in filter.split('/') {
        match f {
            "#" => return true,
            "+" => {
                if t.next().is_none() {
                    return false;
                }
            }
            lit => {
                if t.next() != Some(lit) {
                    return false;
                }
            }
        }
    }
    t.next().is_none()
}

/// Whether every topic that `inner` matches is matched by `outer` too.
pub fn covers(outer: &str, inner: &str) -> bool {
    let mut i = inner.split('/');
    for o in outer.split('/') {
        let Some(level) = i.next() else {
            // `a/#` also matches `a`: an outer `#` covers an inner that ended.
            return o == "#";
        };
        match (o, level) {
            ("#", _) => return true,
            (_, "#") => return false,
            ("+", _) => {}
            (o, l) if o == l => {}
            _ => return false,
        }
    }
    i.next().is_none()
}

/// Whether some topic is matched by both filters.
pub fn overlaps(a: &str, b: &str) -> bool {
    let (mut a, mut b) = (a.split('/'), b.split('/'));
    loop {
        match (a.next(), b.next()) {
            (Some("#"), _) | (_, Some("#")) => return true,
            (None, None) => return true,
            (None, Some(_)) | (Some(_), None) => return false,
            (Some("+"), Some(_)) | (Some(_), Some("+")) => {}
            (Some(x), Some(y)) if x == y => {}
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_match_topics_level_by_level() {
        assert!(matches("a/+/c", "a/b/c"));
        assert!(matches("a/#", "a/b/c"));
        assert!(matches("a/#", "a"));
        assert!(matches("#", "a/b"));
        assert!(!matches("a/+", "a/b/c"));
        assert!(!matches("a/+/c", "a/b"));
        assert!(matches("/+", "/TopicA"));
        assert!(!matches("+", "/TopicA"));
    }

    #[test]
    fn a_filter_covers_another_only_when_it_matches_all_of_its_topics() {
        assert!(covers("#", "a/b"));
        assert!(covers("a/#", "a/+/c"));
        assert!(covers("a/+/c", "a/b/c"));
        assert!(covers("a/+", "a/+"));
        assert!(covers("a/#", "a"));
        assert!(!covers("a/+/c", "a/#"));
        assert!(!covers("a/b", "a/+"));
        assert!(!covers("a/+", "a/b/c"));
        assert!(!covers("a/b/c", "a/b"));
    }

    #[test]
    fn filters_overlap_when_one_topic_matches_both() {
        assert!(overlaps("a/+/c", "a/b/+"));
        assert!(overlaps("#", "x"));
        assert!(overlaps("a/#", "a"));
        assert!(!overlaps("a/+", "a/b/c"));
        assert!(!overlaps("a/b", "a/c"));
    }
}
