//! Behaviour tests on a small hand-made vocabulary. Parity with the real Gemma vocabulary is tested in
//! `crates/gemma/tests/tokenizer_parity.rs`.

use super::*;

/// A Gemma-shaped vocabulary: control tokens, user-defined runs and tags, 256 byte pieces, a few merges.
/// Also the vocabulary of the runtime's text-stream tests.
pub(crate) fn tiny() -> Tokenizer {
    let mut entries: Vec<(String, f32, TokenKind)> = vec![
        ("<pad>".into(), 0., TokenKind::Control),
        ("<eos>".into(), 0., TokenKind::Control),
        ("<bos>".into(), 0., TokenKind::Control),
        ("<unk>".into(), 0., TokenKind::Unknown),
        ("<start_of_turn>".into(), 0., TokenKind::Control),
        ("\n".into(), 0., TokenKind::UserDefined),
        ("\n\n".into(), 0., TokenKind::UserDefined),
        ("<b>".into(), 0., TokenKind::UserDefined),
        ("▁▁".into(), 0., TokenKind::UserDefined),
    ];
    for b in 0..=255u8 {
        entries.push((format!("<0x{b:02X}>"), 0., TokenKind::Byte));
    }
    let normal = ["▁", "a", "b", "c", "h", "i", "<", ">", "s", "t", "é", "▁a", "ab", "▁ab", "hi", "▁hi", "st", "<s", "ta"];
    for (i, p) in normal.iter().enumerate() {
        entries.push((p.to_string(), -(i as f32), TokenKind::Normal));
    }
    let mut vocab = Vocab {
        pieces: entries.iter().map(|e| e.0.clone()).collect(),
        scores: entries.iter().map(|e| if e.2 == TokenKind::Normal { e.1 } else { NO_MERGE }).collect(),
        kinds: entries.iter().map(|e| e.2).collect(),
        bos: Some(2),
        eos: Some(1),
        pad: Some(0),
        unk: Some(3),
        add_bos: true,
        chat_template: None,
    };
    rank_user_defined_first(&mut vocab);
    Tokenizer::from_vocab(vocab).unwrap()
}

const RAW: EncodeOptions = EncodeOptions { add_bos: false, parse_special: false };
const SPECIAL: EncodeOptions = EncodeOptions { add_bos: false, parse_special: true };

fn pieces(t: &Tokenizer, ids: &[u32]) -> Vec<String> {
    ids.iter().map(|&i| t.piece(i).unwrap().to_string()).collect()
}

#[test]
fn spaces_become_the_meta_symbol_without_dummy_prefix() {
    let t = tiny();
    assert_eq!(pieces(&t, &t.encode("hi ab", RAW)), ["hi", "▁ab"]);
    assert_eq!(pieces(&t, &t.encode(" hi", RAW)), ["▁hi"]);
    // Two spaces: the user-defined ▁▁ outranks ▁h, as in Gemma's merges list.
    assert_eq!(pieces(&t, &t.encode("  hi", RAW)), ["▁▁", "hi"]);
}

#[test]
fn bos_is_added_on_request() {
    let t = tiny();
    assert_eq!(t.encode("a", EncodeOptions::default()), vec![2, t.token_id("a").unwrap()]);
    assert_eq!(t.encode("", EncodeOptions::default()), vec![2]);
    assert!(t.encode("", RAW).is_empty());
}

#[test]
fn control_tokens_only_with_special_parsing_user_defined_always() {
    let t = tiny();
    let on = t.encode("<start_of_turn>hi<b>\n\n\n", SPECIAL);
    assert_eq!(pieces(&t, &on), ["<start_of_turn>", "hi", "<b>", "\n\n", "\n"]);
    let off = t.encode("<start_of_turn>hi<b>\n\n\n", RAW);
    assert_eq!(pieces(&t, &off)[..2], ["<", "st"]); // "st" outranks "<s"
    assert_eq!(pieces(&t, &off)[off.len() - 3..], ["<b>", "\n\n", "\n"]);
    // Control pieces are never built by merges, even when their text is typed out.
    assert!(!off.contains(&4));
}

#[test]
fn byte_fallback_for_unknown_characters() {
    let t = tiny();
    assert_eq!(pieces(&t, &t.encode("é€", RAW)), ["é", "<0xE2>", "<0x82>", "<0xAC>"]);
}

#[test]
fn decode_round_trips_and_skips_or_renders_control() {
    let t = tiny();
    let text = "  hi <b>é€\n\n\nst <start_of_turn> x";
    for opts in [RAW, SPECIAL, EncodeOptions::default()] {
        assert_eq!(t.decode(&t.encode(text, opts)).unwrap(), text.replace("<start_of_turn>", if opts.parse_special { "" } else { "<start_of_turn>" }));
    }
    let ids = t.encode("<start_of_turn>hi", EncodeOptions::default());
    assert_eq!(t.decode_with(&ids, ControlTokens::Render).unwrap(), "<bos><start_of_turn>hi");
    assert_eq!(t.decode(&ids).unwrap(), "hi");
    assert!(t.decode(&[u32::MAX]).is_err());
}

#[test]
fn stream_decoder_never_splits_a_character() {
    let t = tiny();
    let ids = t.encode("a€b", RAW);
    let mut d = t.stream_decoder(ControlTokens::Skip);
    let parts: Vec<String> = ids.iter().map(|&i| d.push(i).unwrap()).collect();
    assert_eq!(parts, ["a", "", "", "€", "b"]);
    assert_eq!(d.finish(), "");
}

#[test]
fn stream_decoder_replaces_impossible_bytes() {
    let t = tiny();
    let byte = |b: u8| t.token_id(&format!("<0x{b:02X}>")).unwrap();
    let a = t.token_id("a").unwrap();
    // A lone continuation byte, then a truncated 3-byte sequence cut off by a normal piece.
    let ids = [byte(0x82), byte(0xE2), byte(0x82), a, byte(0xE2)];
    assert_eq!(t.decode(&ids).unwrap(), "\u{FFFD}\u{FFFD}\u{FFFD}a\u{FFFD}");
    let mut d = t.stream_decoder(ControlTokens::Skip);
    let streamed: String = ids.iter().map(|&i| d.push(i).unwrap()).collect::<String>() + &d.finish();
    assert_eq!(streamed, t.decode(&ids).unwrap());
}

/// xorshift64*: a dependency-free source of reproducible random test input.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Random text biased towards the interesting parts: vocabulary characters, spaces, newlines, tag
/// fragments, and any Unicode scalar value but `▁` (U+2581).
fn random_text(rng: &mut Rng, len: usize) -> String {
    const BITS: [&str; 11] = ["a", "b", " ", "  ", "\n", "<b>", "<", "é", "hi", "\t", "<start_of_turn>"];
    let mut s = String::new();
    for _ in 0..len {
        if rng.below(3) == 0 {
            let c = loop {
                if let Some(c) = char::from_u32(rng.below(0x11_0000) as u32).filter(|&c| c != '▁') {
                    break c;
                }
            };
            s.push(c);
        } else {
            s.push_str(BITS[rng.below(BITS.len() as u64) as usize]);
        }
    }
    s
}

#[test]
fn property_decode_inverts_encode_on_random_text() {
    let t = tiny();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for round in 0..2000 {
        let len = rng.below(40) as usize;
        let text = random_text(&mut rng, len);
        for opts in [RAW, EncodeOptions { add_bos: true, parse_special: false }] {
            let ids = t.encode(&text, opts);
            assert_eq!(t.decode(&ids).unwrap(), text, "round {round}: {text:?} -> {ids:?}");
            let mut d = t.stream_decoder(ControlTokens::Skip);
            let mut streamed = String::new();
            for &id in &ids {
                let part = d.push(id).unwrap();
                streamed.push_str(&part);
            }
            streamed.push_str(&d.finish());
            assert_eq!(streamed, text, "round {round}: streaming");
        }
    }
}

/// The one character that does not survive a round trip, in SentencePiece and Hugging Face alike: the text
/// `▁` is the piece for a space, so it decodes as one.
#[test]
fn meta_symbol_in_text_decodes_as_space() {
    let t = tiny();
    assert_eq!(t.encode("▁hi", RAW), t.encode(" hi", RAW));
    assert_eq!(t.decode(&t.encode("▁hi", RAW)).unwrap(), " hi");
}

#[test]
fn long_input_is_not_quadratic() {
    // A megabyte with no spaces or special tokens is one BPE segment of a million symbols.
    let t = tiny();
    let text = "ab".repeat(500_000);
    let start = std::time::Instant::now();
    let ids = t.encode(&text, RAW);
    assert_eq!(ids.len(), 500_000);
    let spaced = "hi ab ".repeat(170_000);
    assert_eq!(t.decode(&t.encode(&spaced, RAW)).unwrap(), spaced);
    assert!(start.elapsed().as_secs_f64() < 5.0, "took {:?}", start.elapsed());
}

#[test]
fn special_ids_and_lookups() {
    let t = tiny();
    assert_eq!((t.bos_id(), t.eos_id(), t.pad_id(), t.unk_id()), (Some(2), Some(1), Some(0), Some(3)));
    assert!(t.is_control(4) && !t.is_control(5));
    assert_eq!(t.token_id("<start_of_turn>"), Some(4));
    assert_eq!(t.piece(100_000), None);
    assert_eq!(t.stop_ids(), vec![1]);
}
