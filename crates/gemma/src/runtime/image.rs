//! Image input for the vision models (PaliGemma, Gemma 3): decode a PNG, JPEG or WebP into upright RGB8
//! pixels, resize them exactly as Pillow does, and normalise them into the tensor an image processor gives.
//!
//! The reference is transformers' path from a file to `pixel_values`:
//! - `transformers.image_utils.load_image`: Pillow decodes, `ImageOps.exif_transpose` applies the EXIF
//!   orientation, `convert("RGB")` makes three 8-bit channels. Pillow's conversion *drops* alpha (RGBA, LA and
//!   palette transparency alike: the colour under a transparent pixel is kept), greyscale is copied into all
//!   three channels, and 16-bit RGB keeps the high byte of each sample. ([`decode_image`], [`load_image`].)
//!   A PIL image handed straight to a processor is composited onto white instead (`convert_to_rgb`); a path,
//!   a URL or a chat message's image goes through `load_image`, which is what this module reproduces.
//! - the processor (`SiglipImageProcessorPil` for PaliGemma, `Gemma3ImageProcessorPil` for Gemma 3: what
//!   `AutoImageProcessor` picks in transformers 5 without torchvision) resizes with Pillow's `Image.resize`
//!   (BICUBIC for SigLIP, BILINEAR for Gemma 3; [`resize`]), then rescales by 1/255 and normalises per channel
//!   ([`preprocess`]).
//!
//! [`resize`] reproduces Pillow's `ImagingResample` on 8-bit RGB bit for bit: a separable filter, one pass
//! per axis whose size changes, each rounding and clipping to 8 bits; per output pixel the filter's taps are
//! computed in f64, normalised to sum 1 and rounded to 22-bit fixed point, and when shrinking the filter is
//! widened by the scale factor (antialiasing). The horizontal pass goes first unless the height loses more
//! than twice as many pixels as the width: that is Pillow 13's order (Pillow 12 and older always ran the
//! horizontal pass first, and give results a few levels apart on such images). The code is this module's
//! own; the numbers are Pillow's, checked against Pillow 13 in tests/image.rs.
//!
//! Memory is bounded before decoding: the header's dimensions are read first and an image over
//! [`MAX_IMAGE_PIXELS`] is refused with [`Error::ImageTooLarge`] without allocating its pixels.

use std::borrow::Cow;
use std::io::{Cursor, Read};
use std::path::Path;

use image::metadata::Orientation;
use image::{DynamicImage, ImageDecoder, ImageError, ImageFormat, ImageReader, Limits};

use crate::{Error, Result};

/// The most pixels (width × height) an image may have to be decoded: 64 Mi pixels, e.g. 8192 × 8192 or a
/// 12000 × 5592 panorama. Decoding one at the limit holds at most 8 bytes a pixel (16-bit RGBA, 512 MiB) and
/// the 3-byte RGB result. Pillow warns at 89.5 M pixels and refuses at twice that; no photo a model is
/// shown needs more, and every processor shrinks it to at most 896 × 896.
pub const MAX_IMAGE_PIXELS: u64 = 1 << 26;

/// An upright 8-bit RGB image: `height` rows of `width` pixels, each pixel `[r, g, b]`, rows top to bottom.
#[derive(Clone, PartialEq, Eq)]
pub struct Image {
    width: u32,
    height: u32,
    data: Vec<u8>,
}

impl Image {
    /// An image from its rows of RGB bytes (`width * height * 3` of them, row-major, no padding).
    pub fn from_rgb8(width: u32, height: u32, data: Vec<u8>) -> Result<Image> {
        let want = width as u64 * height as u64 * 3;
        if data.len() as u64 != want {
            return Err(Error::Invalid(format!(
                "an RGB image of {width}x{height} pixels needs {want} bytes, got {}",
                data.len()
            )));
        }
        Ok(Image { width, height, data })
    }

    pub fn width(&self) -> u32 {
        self.width
    }

    pub fn height(&self) -> u32 {
        self.height
    }

    /// The pixels, `[r, g, b]` per pixel, row-major: `height * width * 3` bytes.
    pub fn as_rgb8(&self) -> &[u8] {
        &self.data
    }

    pub fn into_rgb8(self) -> Vec<u8> {
        self.data
    }

    /// The pixel at column `x`, row `y` (from the top left); `None` outside the image.
    pub fn pixel(&self, x: u32, y: u32) -> Option<[u8; 3]> {
        if x >= self.width || y >= self.height {
            return None;
        }
        let i = (y as usize * self.width as usize + x as usize) * 3;
        Some([self.data[i], self.data[i + 1], self.data[i + 2]])
    }

    fn zeros(width: u32, height: u32) -> Image {
        Image { width, height, data: vec![0; width as usize * height as usize * 3] }
    }
}

impl std::fmt::Debug for Image {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Image({}x{} RGB8)", self.width, self.height)
    }
}

/// Reads and decodes the image file at `path` (see [`decode_image`]); errors name the path. A file without
/// an image signature is refused after its first 16 bytes, without reading the rest.
pub fn load_image(path: impl AsRef<Path>) -> Result<Image> {
    let path = path.as_ref();
    let io = |e| Error::io(path, e);
    let mut file = std::fs::File::open(path).map_err(io)?;
    let mut bytes = Vec::new();
    file.by_ref().take(16).read_to_end(&mut bytes).map_err(io)?;
    sniff(&bytes, path)?;
    file.read_to_end(&mut bytes).map_err(io)?;
    decode_image(&bytes, path)
}

/// Decodes a PNG, JPEG or WebP held in memory, as transformers' `load_image` does with Pillow: the EXIF
/// orientation applied (JPEG, WebP and PNG `eXIf`), then converted to RGB8 (alpha dropped, grey copied to
/// the three channels, 16-bit samples cut to their high byte). The format is told by the bytes, never by
/// `name`, which only names the image in errors (a path, or e.g. "request image 1").
///
/// Errors: [`Error::NotAnImage`] (no image signature), [`Error::UnsupportedImage`] (GIF, TIFF, BMP, ...),
/// [`Error::ImageTooLarge`] (over [`MAX_IMAGE_PIXELS`], told from the header before any pixel is decoded),
/// [`Error::Format`] (a corrupt or truncated file of a supported format, or one using a feature its decoder
/// lacks, such as an arithmetic-coded JPEG).
pub fn decode_image(bytes: &[u8], name: impl AsRef<Path>) -> Result<Image> {
    let name = name.as_ref();
    let format = sniff(bytes, name)?;
    let what = format_name(format);
    let corrupt = |e: ImageError| match e {
        ImageError::Unsupported(u) => {
            Error::format(name, format!("a {what} image with a feature the decoder does not support: {u}"))
        }
        e => Error::format(name, format!("corrupt or truncated {what} image: {e}")),
    };
    if format == ImageFormat::Jpeg && !jpeg_is_complete(bytes) {
        return Err(Error::format(name, "truncated JPEG image: the data ends before the end-of-image marker"));
    }
    let mut reader = ImageReader::with_format(Cursor::new(bytes), format);
    // The pixel limit is checked below on the header's dimensions; this bounds what a decoder allocates
    // besides (PNG's metadata chunks, say).
    let mut limits = Limits::default();
    limits.max_alloc = Some(MAX_IMAGE_PIXELS * 8 + (64 << 20));
    reader.limits(limits);
    let mut decoder = reader.into_decoder().map_err(corrupt)?;
    let (width, height) = decoder.dimensions();
    if width as u64 * height as u64 > MAX_IMAGE_PIXELS {
        return Err(Error::ImageTooLarge { path: name.into(), width, height, max_pixels: MAX_IMAGE_PIXELS });
    }
    if width == 0 || height == 0 {
        return Err(Error::format(name, format!("corrupt {what} image: its header says {width}x{height} pixels")));
    }
    // Pillow's exif_transpose ignores EXIF it cannot read; so does this.
    let orientation = decoder.orientation().unwrap_or(Orientation::NoTransforms);
    let decoded = DynamicImage::from_decoder(decoder).map_err(corrupt)?;
    let mut rgb = DynamicImage::ImageRgb8(to_rgb8(decoded));
    rgb.apply_orientation(orientation);
    let rgb = rgb.into_rgb8();
    let (width, height) = rgb.dimensions();
    Ok(Image { width, height, data: rgb.into_raw() })
}

/// The format told by the first bytes, if it is one this module decodes.
fn sniff(bytes: &[u8], name: &Path) -> Result<ImageFormat> {
    match image::guess_format(bytes) {
        Ok(f @ (ImageFormat::Png | ImageFormat::Jpeg | ImageFormat::WebP)) => Ok(f),
        // Two-letter signatures ("BM", "P1".."P7") begin many a text file too: only call it a BMP or PNM
        // when the next bytes agree.
        Ok(ImageFormat::Bmp) if !(bytes.len() >= 18 && [12, 40, 52, 56, 64, 108, 124].contains(&bytes[14])) => {
            Err(Error::NotAnImage { path: name.into() })
        }
        Ok(ImageFormat::Pnm) if !bytes.get(2).is_some_and(|b| b.is_ascii_whitespace()) => {
            Err(Error::NotAnImage { path: name.into() })
        }
        Ok(f) => Err(Error::UnsupportedImage { path: name.into(), format: format_name(f).into() }),
        Err(_) => Err(Error::NotAnImage { path: name.into() }),
    }
}

fn format_name(f: ImageFormat) -> &'static str {
    match f {
        ImageFormat::Png => "PNG",
        ImageFormat::Jpeg => "JPEG",
        ImageFormat::WebP => "WebP",
        ImageFormat::Gif => "GIF",
        ImageFormat::Tiff => "TIFF",
        ImageFormat::Bmp => "BMP",
        ImageFormat::Ico => "ICO",
        ImageFormat::Pnm => "PNM",
        ImageFormat::Dds => "DDS",
        ImageFormat::Hdr => "Radiance HDR",
        ImageFormat::OpenExr => "OpenEXR",
        ImageFormat::Avif => "AVIF",
        ImageFormat::Qoi => "QOI",
        ImageFormat::Farbfeld => "farbfeld",
        ImageFormat::Tga => "TGA",
        _ => "other",
    }
}

/// Whether a JPEG's compressed data goes on to its end-of-image marker. The JPEG decoder fills a file that
/// stops early with grey and says nothing; Pillow refuses one ("image file is truncated"), and so does this
/// module. The marker segments before the first scan are stepped over by their lengths, so that an EXIF
/// thumbnail's own end marker does not count; after that the first FF D9 is the image's end (the compressed
/// data never holds FF D9). A file too malformed to walk is left to the decoder to refuse.
fn jpeg_is_complete(bytes: &[u8]) -> bool {
    let mut i = 2;
    loop {
        let Some(&[ff, marker]) = bytes.get(i..i + 2) else { return false };
        if ff != 0xFF {
            return true;
        }
        match marker {
            0xFF => i += 1,
            0x01 | 0xD0..=0xD8 => i += 2,
            0xD9 => return true,
            0xDA => return bytes[i..].windows(2).any(|w| w == [0xFF, 0xD9]),
            _ => {
                let Some(&[hi, lo]) = bytes.get(i + 2..i + 4) else { return false };
                i += 2 + ((hi as usize) << 8 | lo as usize);
            }
        }
    }
}

/// Pillow's `convert("RGB")` of what the decoders give: alpha dropped, grey to all three channels, 16-bit
/// samples to their high byte (Pillow's reading of 16-bit RGB PNGs; for 16-bit grey Pillow clips the value
/// at 255 instead, which whitens the picture, and is not copied).
fn to_rgb8(img: DynamicImage) -> image::RgbImage {
    let (w, h) = (img.width(), img.height());
    let data: Vec<u8> = match img {
        DynamicImage::ImageRgb8(buf) => return buf,
        DynamicImage::ImageRgba8(buf) => buf.chunks_exact(4).flat_map(|p| [p[0], p[1], p[2]]).collect(),
        DynamicImage::ImageLuma8(buf) => buf.iter().flat_map(|&v| [v, v, v]).collect(),
        DynamicImage::ImageLumaA8(buf) => buf.chunks_exact(2).flat_map(|p| [p[0], p[0], p[0]]).collect(),
        DynamicImage::ImageRgb16(buf) => buf.iter().map(|&v| (v >> 8) as u8).collect(),
        DynamicImage::ImageRgba16(buf) => {
            buf.chunks_exact(4).flat_map(|p| [p[0], p[1], p[2]].map(|v| (v >> 8) as u8)).collect()
        }
        DynamicImage::ImageLuma16(buf) => buf.iter().flat_map(|&v| [(v >> 8) as u8; 3]).collect(),
        DynamicImage::ImageLumaA16(buf) => buf.chunks_exact(2).flat_map(|p| [(p[0] >> 8) as u8; 3]).collect(),
        other => return other.into_rgb8(),
    };
    // The lengths match by construction; a mismatch would only give an empty image, never a panic.
    image::RgbImage::from_raw(w, h, data).unwrap_or_default()
}

/// A resampling filter of Pillow's `Image.resize`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resample {
    /// `Image.BILINEAR` (2): the triangle filter, support 1. Gemma 3's processor.
    Bilinear,
    /// `Image.BICUBIC` (3): the cubic convolution kernel with a = -0.5, support 2. SigLIP's (PaliGemma's).
    Bicubic,
}

impl Resample {
    /// The filter for Pillow's number as a `preprocessor_config.json` stores it (`"resample"`); `None` for the
    /// filters this module does not implement (0 nearest, 1 Lanczos, 4 box, 5 Hamming).
    pub fn from_pil(code: u64) -> Option<Resample> {
        match code {
            2 => Some(Resample::Bilinear),
            3 => Some(Resample::Bicubic),
            _ => None,
        }
    }

    /// Half the filter's width, in source pixels at scale 1.
    fn support(self) -> f64 {
        match self {
            Resample::Bilinear => 1.0,
            Resample::Bicubic => 2.0,
        }
    }

    /// The filter at `x` (in f64, with the operations in Pillow's order so that every tap rounds alike).
    fn weight(self, x: f64) -> f64 {
        let x = x.abs();
        match self {
            Resample::Bilinear => {
                if x < 1.0 {
                    1.0 - x
                } else {
                    0.0
                }
            }
            Resample::Bicubic => {
                const A: f64 = -0.5;
                if x < 1.0 {
                    ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
                } else if x < 2.0 {
                    (((x - 5.0) * x + 8.0) * x - 4.0) * A
                } else {
                    0.0
                }
            }
        }
    }
}

/// Fixed-point fraction bits of the taps: 32 bits less 8 for the pixel value and 2 for the sum's overshoot.
const PRECISION_BITS: u32 = 22;

/// The taps of one resampling pass along an axis: output `i` reads `len[i]` source samples from
/// `first[i]`, weighted by `k[i * ksize ..][..len[i]]` (22-bit fixed point, summing to about 1 << 22).
struct Taps {
    first: Vec<usize>,
    len: Vec<usize>,
    ksize: usize,
    k: Vec<i32>,
}

fn taps(in_size: usize, out_size: usize, filter: Resample) -> Taps {
    // Pillow measures the source by a float box (0, in_size): the size goes through f32 first.
    let scale = (in_size as f32) as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = filter.support() * filterscale;
    let ksize = support.ceil() as usize * 2 + 1;
    let mut t = Taps { first: vec![0; out_size], len: vec![0; out_size], ksize, k: vec![0; out_size * ksize] };
    let mut w = vec![0f64; ksize];
    for i in 0..out_size {
        let center = (i as f64 + 0.5) * scale;
        let ss = 1.0 / filterscale;
        // `as` truncates toward zero, as C's (int) does.
        let first = ((center - support + 0.5) as i64).max(0);
        let end = ((center + support + 0.5) as i64).min(in_size as i64);
        let len = (end - first).clamp(0, ksize as i64) as usize;
        let mut sum = 0.0;
        for (j, wj) in w[..len].iter_mut().enumerate() {
            *wj = filter.weight(((j as i64 + first) as f64 - center + 0.5) * ss);
            sum += *wj;
        }
        let one = (1u32 << PRECISION_BITS) as f64;
        for (j, &wj) in w[..len].iter().enumerate() {
            let wj = if sum != 0.0 { wj / sum } else { wj };
            t.k[i * ksize + j] = if wj < 0.0 { (-0.5 + wj * one) as i32 } else { (0.5 + wj * one) as i32 };
        }
        t.first[i] = first as usize;
        t.len[i] = len;
    }
    t
}

/// A fixed-point sum (with its rounding half already added) back to a byte, clipped.
#[inline]
fn clip8(acc: i32) -> u8 {
    (acc >> PRECISION_BITS).clamp(0, 255) as u8
}

// No sum can overflow i32: a pass's positive taps add up to well under 2 (bicubic's negative lobes are
// small; the most found over every size pair up to 200 is 1.14), and 2 · 2^22 · 255 + 2^21 < 2^31.
const HALF: i32 = 1 << (PRECISION_BITS - 1);

/// Resizes `rows` (`in_w` pixels each) to `out_w` pixels each.
fn horizontal(src: &[u8], in_w: usize, rows: std::ops::Range<usize>, t: &Taps) -> Vec<u8> {
    let out_w = t.first.len();
    let mut out = vec![0u8; rows.len() * out_w * 3];
    for (y, dst) in rows.zip(out.chunks_exact_mut(out_w * 3)) {
        let row = &src[y * in_w * 3..(y + 1) * in_w * 3];
        for (x, px) in dst.chunks_exact_mut(3).enumerate() {
            let k = &t.k[x * t.ksize..x * t.ksize + t.len[x]];
            let from = &row[t.first[x] * 3..(t.first[x] + t.len[x]) * 3];
            let (mut r, mut g, mut b) = (HALF, HALF, HALF);
            for (&w, s) in k.iter().zip(from.chunks_exact(3)) {
                r += s[0] as i32 * w;
                g += s[1] as i32 * w;
                b += s[2] as i32 * w;
            }
            px.copy_from_slice(&[clip8(r), clip8(g), clip8(b)]);
        }
    }
    out
}

/// Resizes the columns of `src` (rows of `w` pixels; row 0 of `src` is source row `offset`) to the
/// vertical taps' output height.
fn vertical(src: &[u8], w: usize, offset: usize, t: &Taps) -> Vec<u8> {
    let stride = w * 3;
    let out_h = t.first.len();
    let mut out = vec![0u8; out_h * stride];
    let mut acc = vec![0i32; stride];
    for (y, dst) in out.chunks_exact_mut(stride).enumerate() {
        acc.fill(HALF);
        let k = &t.k[y * t.ksize..y * t.ksize + t.len[y]];
        for (j, &w) in k.iter().enumerate() {
            let r = t.first[y] + j - offset;
            for (a, &s) in acc.iter_mut().zip(&src[r * stride..(r + 1) * stride]) {
                *a += s as i32 * w;
            }
        }
        for (d, &a) in dst.iter_mut().zip(&acc) {
            *d = clip8(a);
        }
    }
    out
}

/// `image` resized to `width` × `height` as Pillow's `image.resize((width, height), filter)` does on an RGB
/// image, byte for byte. An image already that size is returned as it is (Pillow copies it too); a pass
/// whose axis keeps its size is skipped, as in Pillow. A zero target gives an empty image; an empty source,
/// a black one.
pub fn resize(image: &Image, width: u32, height: u32, filter: Resample) -> Image {
    resized(image, width, height, filter).into_owned()
}

/// [`resize`] with Pillow's BICUBIC (SigLIP's, PaliGemma's).
pub fn resize_bicubic(image: &Image, width: u32, height: u32) -> Image {
    resize(image, width, height, Resample::Bicubic)
}

/// [`resize`] with Pillow's BILINEAR (Gemma 3's).
pub fn resize_bilinear(image: &Image, width: u32, height: u32) -> Image {
    resize(image, width, height, Resample::Bilinear)
}

fn resized(image: &Image, width: u32, height: u32, filter: Resample) -> Cow<'_, Image> {
    if (image.width, image.height) == (width, height) {
        return Cow::Borrowed(image);
    }
    if width == 0 || height == 0 || image.width == 0 || image.height == 0 {
        return Cow::Owned(Image::zeros(width, height));
    }
    let (in_w, in_h) = (image.width as usize, image.height as usize);
    let (out_w, out_h) = (width as usize, height as usize);
    let vt = taps(in_h, out_h, filter);
    let ht = taps(in_w, out_w, filter);
    let data = if out_h < in_h && (in_h - out_h) as i64 > 2 * (in_w as i64 - out_w as i64) {
        // Pillow 13 runs the vertical pass first when the height loses more than twice as many pixels as the
        // width (its PR 9549; earlier versions always ran the horizontal pass first).
        let data = vertical(&image.data, in_w, 0, &vt);
        if out_w != in_w { horizontal(&data, in_w, 0..out_h, &ht) } else { data }
    } else {
        // The horizontal pass runs only over the source rows the vertical pass reads.
        let (rows, offset) = if out_h != in_h {
            let first = vt.first[0];
            let last = vt.first[out_h - 1] + vt.len[out_h - 1];
            (first..last.max(first), first)
        } else {
            (0..in_h, 0)
        };
        let (data, w, offset) = if out_w != in_w {
            (Cow::Owned(horizontal(&image.data, in_w, rows, &ht)), out_w, offset)
        } else {
            (Cow::Borrowed(&image.data[..]), in_w, 0)
        };
        if out_h != in_h { vertical(&data, w, offset, &vt) } else { data.into_owned() }
    };
    Cow::Owned(Image { width, height, data })
}

/// An image processor's `pixel_values` for one image: resized to `size` × `size` with `filter` ([`resize`]),
/// each byte scaled by 1/255 (in f64, then rounded to f32), then `(x - mean[c]) / std[c]` in f32 for channel
/// `c` — transformers' PIL-backend arithmetic, so the values match to the bit.
///
/// Returns `3 * size * size` values, channels first: `[c][y][x]` at `c * size * size + y * size + x`, c in
/// R, G, B order. PaliGemma: `size` 224/448/896, BICUBIC, mean = std = 0.5 (values in [-1, 1]); Gemma 3:
/// 896, BILINEAR, mean = std = 0.5.
pub fn preprocess(image: &Image, size: u32, mean: [f32; 3], std: [f32; 3], filter: Resample) -> Vec<f32> {
    let resized = resized(image, size, size, filter);
    let n = size as usize * size as usize;
    let mut out = vec![0f32; 3 * n];
    for (i, px) in resized.data.chunks_exact(3).enumerate() {
        for c in 0..3 {
            let x = (px[c] as f64 * (1.0 / 255.0)) as f32;
            out[c * n + i] = (x - mean[c]) / std[c];
        }
    }
    out
}
