//! Stop strings over streamed text: OpenAI semantics (the output ends just before the first
//! occurrence of any stop string, which is not included), without ever streaming text that a
//! later delta could turn into a stop string.

/// Feeds text deltas; holds back the longest tail that could still begin a stop string.
pub struct StopMatcher {
    stops: Vec<String>,
    held: String,
}

impl StopMatcher {
    pub fn new(stops: Vec<String>) -> Self {
        StopMatcher { stops: stops.into_iter().filter(|s| !s.is_empty()).collect(), held: String::new() }
    }

    /// Adds `delta`; returns the text that is now safe to emit and whether a stop string matched
    /// (then generation should end and nothing after the match is ever emitted).
    pub fn push(&mut self, delta: &str) -> (String, bool) {
        self.held.push_str(delta);
        // Everything before `held` was checked already, so a match can only start inside `held`.
        if let Some(pos) = self.stops.iter().filter_map(|s| self.held.find(s.as_str())).min() {
            let out = self.held[..pos].to_string();
            self.held.clear();
            return (out, true);
        }
        let keep_from = self.partial_match_start();
        let out = self.held[..keep_from].to_string();
        self.held.drain(..keep_from);
        (out, false)
    }

    /// Generation ended without a match: the held tail is ordinary text.
    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.held)
    }

    /// Start of the longest suffix of `held` that is a proper prefix of some stop string.
    fn partial_match_start(&self) -> usize {
        self.held
            .char_indices()
            .map(|(i, _)| i)
            .find(|&i| {
                let tail = &self.held[i..];
                self.stops.iter().any(|s| s.len() > tail.len() && s.starts_with(tail))
            })
            .unwrap_or(self.held.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(stops: &[&str], deltas: &[&str]) -> (String, bool) {
        let mut m = StopMatcher::new(stops.iter().map(|s| s.to_string()).collect());
        let mut out = String::new();
        for d in deltas {
            let (s, hit) = m.push(d);
            out.push_str(&s);
            if hit {
                return (out, true);
            }
        }
        out.push_str(&m.finish());
        (out, false)
    }

    #[test]
    fn stop_strings() {
        assert_eq!(run(&[], &["ab", "cd"]), ("abcd".into(), false));
        assert_eq!(run(&["cd"], &["ab", "c", "de"]), ("ab".into(), true));
        assert_eq!(run(&["xyz"], &["ab", "xy", "q"]), ("abxyq".into(), false));
        assert_eq!(run(&["xyz"], &["ab", "xy"]), ("abxy".into(), false));
        assert_eq!(run(&["b", "abc"], &["zab", "c"]), ("za".into(), true));
        assert_eq!(run(&["é!"], &["caf", "é", "!", "more"]), ("caf".into(), true));
    }

    #[test]
    fn held_text_is_never_emitted_early() {
        let mut m = StopMatcher::new(vec!["STOP".into()]);
        assert_eq!(m.push("go ST"), ("go ".into(), false));
        assert_eq!(m.push("O"), ("".into(), false));
        assert_eq!(m.push("p"), ("STOp".into(), false));
    }
}
