//! Bounded free texts: titles, descriptions, categories, warehouse names and reasons.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::ident::{check_len, string_value};
use super::ValueError;

/// How a free text is checked: trimmed or kept verbatim, length bounds in characters, and
/// whether line breaks and tabs are allowed.
struct TextRule {
    min: usize,
    max: usize,
    trim: bool,
    multiline: bool,
}

fn check_text(field: &'static str, value: String, rule: &TextRule) -> Result<String, ValueError> {
    let value = if rule.trim {
        let trimmed = value.trim();
        if trimmed.len() == value.len() {
            value
        } else {
            trimmed.to_owned()
        }
    } else {
        value
    };
    check_len(field, &value, rule.min, rule.max)?;
    let allowed = |c: char| rule.multiline && matches!(c, '\n' | '\t');
    if value.chars().any(|c| c.is_control() && !allowed(c)) {
        return Err(ValueError::ControlCharacter { field });
    }
    Ok(value)
}

string_value!(
    /// Product title: trimmed, 1..=200 characters, single line.
    Title,
    "title",
    |field, value| check_text(field, value, &TextRule { min: 1, max: 200, trim: true, multiline: false })
);

string_value!(
    /// Product description: kept verbatim (formatting matters), 0..=5000 characters; `\n` and
    /// `\t` are the only control characters allowed.
    Description,
    "description",
    |field, value| check_text(field, value, &TextRule { min: 0, max: 5000, trim: false, multiline: true })
);

string_value!(
    /// Product category: trimmed, 1..=100 characters, single line.
    Category,
    "category",
    |field, value| check_text(field, value, &TextRule { min: 1, max: 100, trim: true, multiline: false })
);

string_value!(
    /// Warehouse display name: trimmed, 1..=200 characters, single line.
    WarehouseName,
    "warehouse name",
    |field, value| check_text(field, value, &TextRule { min: 1, max: 200, trim: true, multiline: false })
);

string_value!(
    /// Why something happened (rejection, cancellation, stock adjustment): trimmed,
    /// 1..=500 characters; `\n` and `\t` allowed so operators can write notes.
    Reason,
    "reason",
    |field, value| check_text(field, value, &TextRule { min: 1, max: 500, trim: true, multiline: true })
);

impl Description {
    /// The empty description, valid by definition.
    #[must_use]
    pub fn empty() -> Self {
        Self(String::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_title_is_trimmed_and_must_not_be_blank() {
        assert_eq!(Title::parse("  Lamp  ").unwrap().as_str(), "Lamp");
        assert_eq!(
            Title::parse("   "),
            Err(ValueError::Empty { field: "title" })
        );
    }

    #[test]
    fn a_title_longer_than_200_characters_is_rejected() {
        assert!(Title::parse(&"é".repeat(200)).is_ok());
        assert_eq!(
            Title::parse(&"é".repeat(201)),
            Err(ValueError::TooLong {
                field: "title",
                max: 200,
                actual: 201
            })
        );
    }

    #[test]
    fn a_title_with_a_line_break_is_rejected() {
        assert_eq!(
            Title::parse("two\nlines"),
            Err(ValueError::ControlCharacter { field: "title" })
        );
    }

    #[test]
    fn a_description_may_be_empty_and_multiline() {
        assert_eq!(Description::parse("").unwrap(), Description::empty());
        assert!(Description::parse("line one\n\tline two").is_ok());
    }

    #[test]
    fn a_description_with_other_control_characters_is_rejected() {
        for bad in ["bell\u{7}", "nul\0", "cr\r\n", "esc\u{1b}[0m", "c1\u{85}"] {
            assert_eq!(
                Description::parse(bad),
                Err(ValueError::ControlCharacter {
                    field: "description"
                }),
                "{bad:?} should be rejected"
            );
        }
    }

    #[test]
    fn a_description_longer_than_5000_characters_is_rejected() {
        assert!(Description::parse(&"x".repeat(5000)).is_ok());
        assert!(matches!(
            Description::parse(&"x".repeat(5001)),
            Err(ValueError::TooLong { max: 5000, .. })
        ));
    }

    #[test]
    fn a_category_is_trimmed_non_empty_and_at_most_100_characters() {
        assert_eq!(Category::parse(" lamps ").unwrap().as_str(), "lamps");
        assert_eq!(
            Category::parse(""),
            Err(ValueError::Empty { field: "category" })
        );
        assert!(matches!(
            Category::parse(&"c".repeat(101)),
            Err(ValueError::TooLong { max: 100, .. })
        ));
    }

    #[test]
    fn a_warehouse_name_is_trimmed_non_empty_and_at_most_200_characters() {
        assert_eq!(WarehouseName::parse(" Main ").unwrap().as_str(), "Main");
        assert!(matches!(
            WarehouseName::parse(" "),
            Err(ValueError::Empty { .. })
        ));
        assert!(matches!(
            WarehouseName::parse(&"w".repeat(201)),
            Err(ValueError::TooLong { max: 200, .. })
        ));
    }

    #[test]
    fn a_reason_is_non_empty_and_at_most_500_characters() {
        assert!(Reason::parse("damaged\nin transit").is_ok());
        assert!(matches!(Reason::parse(""), Err(ValueError::Empty { .. })));
        assert!(matches!(
            Reason::parse(&"r".repeat(501)),
            Err(ValueError::TooLong { max: 500, .. })
        ));
    }

    #[test]
    fn deserialising_a_text_validates_it() {
        assert!(serde_json::from_str::<Title>("\"   \"").is_err());
        assert_eq!(
            serde_json::from_str::<Title>("\" Lamp \"")
                .unwrap()
                .as_str(),
            "Lamp"
        );
    }
}
