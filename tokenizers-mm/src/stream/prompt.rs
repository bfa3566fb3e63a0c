//! What a stream is built from: chat messages with typed parts, or a raw prompt with
//! `<image>` / `<video>` / `<audio>` markers.

use super::media::MediaKind;

/// One part of a chat message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Part {
    /// Text (untrusted: never becomes special ids).
    Text(String),
    /// The next media item of this kind.
    Media(MediaKind),
}

/// A chat message with media parts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MmMessage {
    /// "system", "user" or "assistant".
    pub role: String,
    /// Content parts, in order.
    pub parts: Vec<Part>,
}

impl MmMessage {
    /// A message whose text may contain `<image>` / `<video>` / `<audio>` markers.
    pub fn with_markers(role: impl Into<String>, text: &str) -> Self {
        MmMessage { role: role.into(), parts: parse_markers(text) }
    }
}

/// Split text at media markers: `"a<image>b"` → `[Text("a"), Media(Image), Text("b")]`
/// (empty texts are dropped).
pub fn parse_markers(text: &str) -> Vec<Part> {
    let mut parts = Vec::new();
    let mut rest = text;
    loop {
        let next = MediaKind::ALL.iter().filter_map(|&k| rest.find(k.marker()).map(|i| (i, k))).min_by_key(|&(i, _)| i);
        match next {
            Some((i, kind)) => {
                if i > 0 {
                    parts.push(Part::Text(rest[..i].to_string()));
                }
                parts.push(Part::Media(kind));
                rest = &rest[i + kind.marker().len()..];
            }
            None => {
                if !rest.is_empty() {
                    parts.push(Part::Text(rest.to_string()));
                }
                return parts;
            }
        }
    }
}

/// What to build a stream from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StreamPrompt {
    /// ERNIE-4.5-VL chat format (module docs).
    Chat {
        /// The conversation.
        messages: Vec<MmMessage>,
        /// Append `"\nAssistant: "` (+ the empty think block unless `enable_thinking`).
        add_generation_prompt: bool,
        /// Open a `<think>` block instead of the empty `<think>\n\n</think>\n\n`.
        enable_thinking: bool,
    },
    /// Trusted raw text (special-token text is parsed) with media markers replaced by
    /// `start + placeholder×n + end`; no template, no "Picture k:" labels.
    Raw(String),
}

impl StreamPrompt {
    /// One user turn from marker text, with generation prompt, thinking off. If the text has no
    /// markers at all, the media counts given are placed before the text (images, then videos,
    /// then audio) — the common "image, then question" layout.
    pub fn user(text: &str, n_images: usize, n_videos: usize, n_audios: usize) -> Self {
        let mut parts = parse_markers(text);
        if !parts.iter().any(|p| matches!(p, Part::Media(_))) {
            let media = [(MediaKind::Image, n_images), (MediaKind::Video, n_videos), (MediaKind::Audio, n_audios)];
            let mut pre: Vec<Part> = media.iter().flat_map(|&(k, n)| std::iter::repeat_n(Part::Media(k), n)).collect();
            pre.append(&mut parts);
            parts = pre;
        }
        StreamPrompt::Chat {
            messages: vec![MmMessage { role: "user".into(), parts }],
            add_generation_prompt: true,
            enable_thinking: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_split() {
        assert_eq!(
            parse_markers("a<image>b<video><audio>"),
            vec![
                Part::Text("a".into()),
                Part::Media(MediaKind::Image),
                Part::Text("b".into()),
                Part::Media(MediaKind::Video),
                Part::Media(MediaKind::Audio)
            ]
        );
        assert_eq!(parse_markers(""), vec![]);
    }
}
