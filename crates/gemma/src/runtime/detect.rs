//! PaliGemma's location tokens read back as boxes: the answer to `detect cat ; dog` is a list of
//! `<locY0><locX0><locY1><locX1> label` separated by ` ; ` (big_vision's `paligemma` README and
//! transformers' PaliGemma docs). Each `<locNNNN>` is one of 1024 bins along the image's height (y) or
//! width (x); since the processor resizes the whole image to a square (no crop), a bin maps straight back
//! to the original image: `coordinate = bin / 1024 · side`.
//!
//! Segmentation answers add 16 `<segNNN>` codes after the box; decoding them needs the VQ-VAE that
//! transformers does not ship, so they are kept as codes.

use serde::Serialize;

/// Bins per image side of a `<locNNNN>` token.
pub const LOC_BINS: f32 = 1024.0;

/// One detected object.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Detection {
    pub label: String,
    /// `[x0, y0, x1, y1]` in pixels of the original image (x to the right, y down, from its top-left corner).
    #[serde(rename = "box")]
    pub bbox: [f32; 4],
    /// The `<segNNN>` codes that followed the box, if any (not decoded: see the module doc).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub seg_codes: Vec<u16>,
}

/// The detections in a decoded answer (special tokens kept as text, e.g. `<loc0123>`), scaled to a
/// `width` × `height` image. Pieces without four location tokens are skipped; an answer with none gives
/// an empty list.
pub fn parse_detections(text: &str, width: u32, height: u32) -> Vec<Detection> {
    text.split(';').filter_map(|piece| parse_one(piece.trim(), width as f32, height as f32)).collect()
}

fn parse_one(piece: &str, w: f32, h: f32) -> Option<Detection> {
    let mut rest = piece;
    let mut locs = Vec::with_capacity(4);
    while locs.len() < 4 {
        let (n, r) = tag(rest.trim_start(), "<loc", 4)?;
        locs.push(n as f32);
        rest = r;
    }
    let mut seg_codes = Vec::new();
    while let Some((n, r)) = tag(rest.trim_start(), "<seg", 3) {
        seg_codes.push(n as u16);
        rest = r;
    }
    let label = rest.trim().to_string();
    let (y0, x0, y1, x1) = (locs[0], locs[1], locs[2], locs[3]);
    Some(Detection {
        label,
        bbox: [x0 / LOC_BINS * w, y0 / LOC_BINS * h, x1 / LOC_BINS * w, y1 / LOC_BINS * h],
        seg_codes,
    })
}

/// `<locNNNN>` (or `<segNNN>`) at the start of `s`: its number and what follows.
fn tag<'a>(s: &'a str, open: &str, digits: usize) -> Option<(u32, &'a str)> {
    let r = s.strip_prefix(open)?;
    let (num, r) = r.split_at_checked(digits)?;
    let r = r.strip_prefix('>')?;
    if !num.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((num.parse().ok()?, r))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boxes_scale_to_the_original_image_and_labels_follow() {
        let d = parse_detections("<loc0256><loc0512><loc0768><loc1023> cat ; <loc0000><loc0000><loc0512><loc0512> dog", 200, 100);
        assert_eq!(d.len(), 2);
        assert_eq!(d[0].label, "cat");
        // y from the 1st and 3rd tokens (height 100), x from the 2nd and 4th (width 200).
        assert_eq!(d[0].bbox, [100.0, 25.0, 1023.0 / 1024.0 * 200.0, 75.0]);
        assert_eq!(d[1], Detection { label: "dog".into(), bbox: [0.0, 0.0, 100.0, 50.0], seg_codes: vec![] });
    }

    #[test]
    fn segmentation_codes_are_kept_and_junk_is_skipped() {
        let d = parse_detections("<loc0010><loc0020><loc0030><loc0040><seg001><seg127> car ; nothing here ; <loc0001><loc02", 1024, 1024);
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].seg_codes, vec![1, 127]);
        assert_eq!(d[0].label, "car");
        assert!(parse_detections("a cat on a mat", 10, 10).is_empty());
        assert!(parse_detections("<loc12a4><loc0000><loc0000><loc0000> x", 10, 10).is_empty());
    }
}
