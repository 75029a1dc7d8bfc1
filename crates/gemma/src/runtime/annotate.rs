//! Detections drawn on the picture: a coloured frame per box and its label on a filled tab above it,
//! written as PNG (`gemma run --annotate`). Labels use the public-domain 8×8 bitmap font of the `font8x8`
//! crate, scaled so they stay readable on large photos.

use std::path::Path;

use font8x8::UnicodeFonts;

use super::detect::Detection;
use super::image::Image;
use crate::{Error, Result};

/// Frame colours, one per detection in turn (high contrast on photos).
const PALETTE: [[u8; 3]; 6] = [[255, 56, 56], [56, 200, 255], [255, 210, 0], [72, 220, 90], [255, 120, 220], [255, 150, 40]];

/// A copy of `image` with each detection's box framed and labelled.
pub fn draw_detections(image: &Image, detections: &[Detection]) -> Image {
    let (w, h) = (image.width(), image.height());
    let mut canvas = Canvas { w: w as i64, h: h as i64, px: image.as_rgb8().to_vec() };
    let side = w.min(h) as i64;
    let thick = (side / 150).clamp(2, 8);
    let scale = (side / 300).clamp(1, 4);
    for (i, d) in detections.iter().enumerate() {
        let c = PALETTE[i % PALETTE.len()];
        let [x0, y0, x1, y1] = d.bbox.map(|v| v.round() as i64);
        for t in 0..thick {
            canvas.rect_outline(x0 + t, y0 + t, x1 - t, y1 - t, c);
        }
        if !d.label.is_empty() {
            let (tw, th) = (8 * scale * d.label.chars().count() as i64 + 2 * scale, 8 * scale + 2 * scale);
            // Above the box when there is room, else inside its top edge.
            let ty = if y0 - th >= 0 { y0 - th } else { y0 };
            canvas.fill(x0, ty, x0 + tw, ty + th, c);
            canvas.text(x0 + scale, ty + scale, &d.label, scale, [0, 0, 0]);
        }
    }
    Image::from_rgb8(w, h, canvas.px).expect("same size as the source image")
}

/// Write `image` as an 8-bit RGB PNG. Errors: the file cannot be written.
pub fn save_png(image: &Image, path: &Path) -> Result<()> {
    image::save_buffer_with_format(path, image.as_rgb8(), image.width(), image.height(), image::ExtendedColorType::Rgb8, image::ImageFormat::Png)
        .map_err(|e| match e {
            image::ImageError::IoError(io) => Error::io(path, io),
            other => Error::format(path, other.to_string()),
        })
}

/// RGB8 pixels with clipped drawing.
struct Canvas {
    w: i64,
    h: i64,
    px: Vec<u8>,
}

impl Canvas {
    fn set(&mut self, x: i64, y: i64, c: [u8; 3]) {
        if (0..self.w).contains(&x) && (0..self.h).contains(&y) {
            let at = ((y * self.w + x) * 3) as usize;
            self.px[at..at + 3].copy_from_slice(&c);
        }
    }
    /// Pixels `x0..x1` × `y0..y1`, clipped to the canvas.
    fn fill(&mut self, x0: i64, y0: i64, x1: i64, y1: i64, c: [u8; 3]) {
        for y in y0.max(0)..y1.min(self.h) {
            for x in x0.max(0)..x1.min(self.w) {
                self.set(x, y, c);
            }
        }
    }
    fn rect_outline(&mut self, x0: i64, y0: i64, x1: i64, y1: i64, c: [u8; 3]) {
        if x1 < x0 || y1 < y0 {
            return;
        }
        self.fill(x0, y0, x1 + 1, y0 + 1, c);
        self.fill(x0, y1, x1 + 1, y1 + 1, c);
        self.fill(x0, y0, x0 + 1, y1 + 1, c);
        self.fill(x1, y0, x1 + 1, y1 + 1, c);
    }
    /// `s` in the 8×8 font, each font pixel a `scale`×`scale` square; characters the font lacks are skipped.
    fn text(&mut self, x: i64, y: i64, s: &str, scale: i64, c: [u8; 3]) {
        for (i, ch) in s.chars().enumerate() {
            let Some(glyph) = font8x8::BASIC_FONTS.get(ch).or_else(|| font8x8::LATIN_FONTS.get(ch)) else { continue };
            for (row, bits) in glyph.iter().enumerate() {
                for col in 0..8 {
                    if bits >> col & 1 == 1 {
                        let (gx, gy) = (x + (i as i64 * 8 + col) * scale, y + row as i64 * scale);
                        self.fill(gx, gy, gx + scale, gy + scale, c);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boxes_are_framed_in_place_and_the_rest_untouched() {
        let img = Image::from_rgb8(64, 48, vec![10; 64 * 48 * 3]).unwrap();
        let d = Detection { label: String::new(), bbox: [8.0, 6.0, 40.0, 30.0], seg_codes: vec![] };
        let out = draw_detections(&img, &[d]);
        assert_eq!(out.pixel(8, 6), Some(PALETTE[0]));
        assert_eq!(out.pixel(40, 30), Some(PALETTE[0]));
        assert_eq!(out.pixel(24, 18), Some([10, 10, 10]), "inside the frame");
        assert_eq!(out.pixel(50, 40), Some([10, 10, 10]), "outside the box");
        // A label and a box past the edges draw without panicking.
        let d = Detection { label: "cat é".into(), bbox: [-5.0, -5.0, 100.0, 100.0], seg_codes: vec![] };
        let out = draw_detections(&img, &[d]);
        assert_eq!(out.pixel(0, 0), Some(PALETTE[0]));
    }
}
