//! The page's two languages, and times and spans in the configured offset.

use fleet_rules::UnixMs;

use crate::slack::render::{Language, Style};

/// The page's language.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    /// English.
    En,
    /// Japanese.
    Ja,
}

impl Lang {
    /// `en`, `en-US`, `ja`, `ja-JP` (case-insensitive); others are not spoken.
    pub fn parse(tag: &str) -> Option<Lang> {
        let primary = tag.split(['-', '_']).next()?.to_ascii_lowercase();
        match primary.as_str() {
            "en" => Some(Lang::En),
            "ja" => Some(Lang::Ja),
            _ => None,
        }
    }

    /// The `lang` attribute.
    pub fn code(self) -> &'static str {
        match self {
            Lang::En => "en",
            Lang::Ja => "ja",
        }
    }
}

/// Words in one language.
pub struct Words {
    /// The language.
    pub lang: Lang,
    style: Style,
}

impl Words {
    /// Words in `lang`, times at `utc_offset_min`.
    pub fn new(lang: Lang, utc_offset_min: i32) -> Words {
        let language = match lang {
            Lang::En => Language::En,
            Lang::Ja => Language::Ja,
        };
        Words {
            lang,
            style: Style {
                lang: language,
                utc_offset_min,
            },
        }
    }

    /// The English or the Japanese text.
    pub fn t<'a>(&self, en: &'a str, ja: &'a str) -> &'a str {
        match self.lang {
            Lang::En => en,
            Lang::Ja => ja,
        }
    }

    /// `2026-12-02 09:00:00 UTC+09:00`.
    pub fn time(&self, at: UnixMs) -> String {
        self.style.time(at)
    }

    /// A span for people: `30 days`, `5 hours`, `12 minutes` (or `30日`).
    pub fn span_ms(&self, ms: u64) -> String {
        let minutes = ms / 60_000;
        let (n, en, ja) = if minutes >= 2 * 24 * 60 {
            ((ms as f64 / 86_400_000.0).round() as u64, "days", "日")
        } else if minutes >= 120 {
            ((ms as f64 / 3_600_000.0).round() as u64, "hours", "時間")
        } else if minutes >= 1 {
            (minutes, "minutes", "分")
        } else {
            (ms / 1000, "seconds", "秒")
        };
        match self.lang {
            Lang::En if n == 1 => format!("1 {}", en.trim_end_matches('s')),
            Lang::En => format!("{n} {en}"),
            Lang::Ja => format!("{n}{ja}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn languages_and_spans_read_naturally() {
        assert_eq!(Lang::parse("ja-JP"), Some(Lang::Ja));
        assert_eq!(Lang::parse("EN"), Some(Lang::En));
        assert_eq!(Lang::parse("fr"), None);
        let en = Words::new(Lang::En, 0);
        assert_eq!(en.span_ms(30 * 86_400_000), "30 days");
        assert_eq!(en.span_ms(3 * 3_600_000), "3 hours");
        assert_eq!(en.span_ms(60_000), "1 minute");
        let ja = Words::new(Lang::Ja, 9 * 60);
        assert_eq!(ja.span_ms(9 * 86_400_000), "9日");
        assert!(ja.time(0).ends_with("UTC+09:00"));
    }
}
