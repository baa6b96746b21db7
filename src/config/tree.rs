//! Marks strings the configuration tree shows bare. Serialisers mark with [`bare`]
//! the values that are words, numbers with a unit or addresses (`30s`,
//! `round_robin`, `127.0.0.1:80`) rather than free text; file formats see a plain
//! string.

use std::fmt::Display;

use serde::ser;

/// The newtype-struct name that marks a string as bare. Serialisers that do not
/// know it (toml, serde_json) serialise the string inside, unchanged.
const BARE: &str = "switchyard::config::tree::Bare";

/// Serialises `value`'s text as a bare word (a `serialize_with` helper).
pub(super) fn bare<T: Display + ?Sized, S: ser::Serializer>(
    value: &T,
    s: S,
) -> Result<S::Ok, S::Error> {
    s.serialize_newtype_struct(BARE, &value.to_string())
}

#[cfg(test)]
mod tests {
    use serde::Serialize;

    use super::*;

    #[test]
    fn file_formats_see_a_plain_string() {
        #[derive(Serialize)]
        struct T {
            #[serde(serialize_with = "bare")]
            d: &'static str,
        }
        assert_eq!(toml::to_string(&T { d: "5s" }).unwrap(), "d = \"5s\"\n");
    }
}
