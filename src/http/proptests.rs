//! Property tests of the HTTP layer's parsers: on any input, the path
//! router, query and form decoding, keys and prefixes never panic, and
//! every refusal is a 4xx with a code.

use proptest::prelude::*;

use super::endpoint::Endpoint;
use super::request::{Query, decode_pairs};
use crate::domain::{Key, Prefix};

/// Paths made of the characters that matter to the router.
fn path() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            Just("/".to_owned()),
            Just("v1".to_owned()),
            Just("projects".to_owned()),
            Just("api".to_owned()),
            Just("kv".to_owned()),
            Just("tokens".to_owned()),
            Just("store".to_owned()),
            Just("%FF".to_owned()),
            Just("%2F".to_owned()),
            Just("..".to_owned()),
            "[a-z%0-9.+]{0,4}",
            any::<String>(),
        ],
        0..12,
    )
    .prop_map(|parts| parts.concat())
}

proptest! {
    #[test]
    fn the_router_answers_a_route_or_a_4xx_for_any_path(path in path()) {
        if let Err(error) = Endpoint::parse(&path) {
            prop_assert!(error.status().is_client_error(), "{path:?}: {}", error.status());
        }
    }

    #[test]
    fn query_and_form_decoding_refuse_with_400_or_decode_every_pair(bytes in any::<Vec<u8>>()) {
        match decode_pairs(&bytes, "query parameter") {
            Ok(pairs) => {
                let parts = bytes.split(|&b| b == b'&').filter(|p| !p.is_empty()).count();
                prop_assert_eq!(pairs.len(), parts);
            }
            Err(error) => prop_assert_eq!(error.status().as_u16(), 400),
        }
        if let Ok(text) = std::str::from_utf8(&bytes)
            && let Err(error) = Query::parse(Some(text))
        {
            prop_assert_eq!(error.status().as_u16(), 400);
        }
    }

    #[test]
    fn valid_utf8_always_survives_encoding_and_strict_decoding(
        name in any::<String>(),
        value in any::<String>(),
    ) {
        let encoded: String = form_urlencoded::Serializer::new(String::new())
            .append_pair(&name, &value)
            .finish();
        let pairs = decode_pairs(encoded.as_bytes(), "form field").unwrap();
        if name.is_empty() && value.is_empty() {
            prop_assert!(pairs.len() <= 1);
        } else {
            prop_assert_eq!(pairs, vec![(name, value)]);
        }
    }

    #[test]
    fn keys_and_prefixes_are_parsed_or_refused_from_any_bytes(bytes in any::<Vec<u8>>()) {
        let _ = Key::parse_bytes(bytes.clone());
        if let Ok(text) = String::from_utf8(bytes) {
            let _ = Key::parse(text.clone());
            let _ = Prefix::parse(text);
        }
    }
}
