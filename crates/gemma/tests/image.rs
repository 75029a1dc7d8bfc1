//! Image input against Pillow and transformers (tests/fixtures/images, made by tools/fixtures/make_images.py):
//! decoding of every format, EXIF orientation, Pillow's BICUBIC and BILINEAR resize byte for byte, the
//! processors' pixel_values, and a named error, never a panic, for every bad file.

use std::path::{Path, PathBuf};

use gemma::runtime::image::{
    decode_image, load_image, preprocess, resize, resize_bicubic, resize_bilinear, Image, Resample, MAX_IMAGE_PIXELS,
};
use gemma::Error;
use serde_json::Value;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/images")
}

fn expected() -> Value {
    let text = std::fs::read_to_string(dir().join("expected.json")).expect("tests/fixtures/images/expected.json");
    serde_json::from_str(&text).unwrap()
}

fn base64(s: &str) -> Vec<u8> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("not base64: {c}"),
    };
    let s = s.trim_end_matches('=').as_bytes();
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    for chunk in s.chunks(4) {
        let v: Vec<u32> = chunk.iter().map(|&c| val(c) as u32).collect();
        let n = v.iter().enumerate().fold(0u32, |n, (i, &x)| n | x << (18 - 6 * i));
        out.extend(&n.to_be_bytes()[1..chunk.len()]);
    }
    out
}

fn f32s(s: &str) -> Vec<f32> {
    base64(s).chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect()
}

fn max_diff(a: &[u8], b: &[u8]) -> u8 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| x.abs_diff(*y)).max().unwrap_or(0)
}

/// Pillow's decoding of a fixture (transformers' `load_image`) as an [`Image`].
fn pillow_pixels(entry: &Value) -> Image {
    let (w, h) = (entry["width"].as_u64().unwrap() as u32, entry["height"].as_u64().unwrap() as u32);
    Image::from_rgb8(w, h, base64(entry["pixels"].as_str().unwrap())).unwrap()
}

fn filter(name: &str) -> Resample {
    match name {
        "bicubic" => Resample::Bicubic,
        "bilinear" => Resample::Bilinear,
        _ => panic!("filter {name}"),
    }
}

/// The JPEG decoder (zune-jpeg) is not libjpeg-turbo, Pillow's: their inverse DCTs and chroma upsampling
/// round differently, so a JPEG's pixels may differ by a few levels (3 is the largest difference on these
/// files). PNG and WebP, lossless and lossy (image-webp matches libwebp here), must be exact.
fn tolerance(name: &str) -> u8 {
    if name.ends_with(".jpg") { JPEG_TOLERANCE } else { 0 }
}
const JPEG_TOLERANCE: u8 = 3;

#[test]
fn every_format_decodes_as_pillow_does() {
    let exp = expected();
    for (name, entry) in exp["images"].as_object().unwrap() {
        let img = load_image(dir().join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        let want = pillow_pixels(entry);
        assert_eq!((img.width(), img.height()), (want.width(), want.height()), "{name}: size");
        let d = max_diff(img.as_rgb8(), want.as_rgb8());
        eprintln!("{name}: {} {}, {}x{}: max |ours - Pillow| = {d}", entry["format"], entry["mode"], img.width(),
                  img.height());
        assert!(d <= tolerance(name), "{name}: differs from Pillow by {d}");
        // From memory, under any name, the same.
        let bytes = std::fs::read(dir().join(name)).unwrap();
        assert_eq!(decode_image(&bytes, "upload").unwrap(), img, "{name}");
    }
}

#[test]
fn exif_orientation_6_is_turned_upright() {
    // Stored 40 wide and 24 high, with orientation 6 ("rotate 90° clockwise to display").
    let img = load_image(dir().join("exif-rotated.jpg")).unwrap();
    assert_eq!((img.width(), img.height()), (24, 40));
    let want = pillow_pixels(&expected()["images"]["exif-rotated.jpg"]);
    assert!(max_diff(img.as_rgb8(), want.as_rgb8()) <= JPEG_TOLERANCE);
    // Any other turn or flip of the same size would be far off: compare against them all.
    let flip_h = flip(&want, true, false);
    let flip_v = flip(&want, false, true);
    let turn = flip(&want, true, true);
    for (what, other) in [("mirrored", flip_h), ("flipped", flip_v), ("turned 180°", turn)] {
        assert!(max_diff(img.as_rgb8(), other.as_rgb8()) > 50, "the upright image looks {what}");
    }
}

fn flip(img: &Image, h: bool, v: bool) -> Image {
    let (w, ht) = (img.width(), img.height());
    let mut data = Vec::with_capacity(img.as_rgb8().len());
    for y in 0..ht {
        for x in 0..w {
            let (sx, sy) = (if h { w - 1 - x } else { x }, if v { ht - 1 - y } else { y });
            data.extend(img.pixel(sx, sy).unwrap());
        }
    }
    Image::from_rgb8(w, ht, data).unwrap()
}

#[test]
fn resize_matches_pillow_byte_for_byte() {
    let exp = expected();
    let mut checked = 0;
    for (name, entry) in exp["images"].as_object().unwrap() {
        let src = pillow_pixels(entry);
        for r in entry["resize"].as_array().unwrap() {
            let (w, h) = (r["width"].as_u64().unwrap() as u32, r["height"].as_u64().unwrap() as u32);
            let f = r["filter"].as_str().unwrap();
            let got = resize(&src, w, h, filter(f));
            assert_eq!((got.width(), got.height()), (w, h));
            let d = max_diff(got.as_rgb8(), &base64(r["pixels"].as_str().unwrap()));
            assert_eq!(d, 0, "{name} {}x{} -> {w}x{h} {f}: differs from Pillow by {d}", src.width(), src.height());
            checked += 1;
        }
    }
    assert!(checked >= 40, "only {checked} resizes in expected.json");
    // The big upsample, kept as PNG files.
    let src = pillow_pixels(&exp["images"]["photo.png"]);
    for (f, got) in [("bicubic", resize_bicubic(&src, 224, 224)), ("bilinear", resize_bilinear(&src, 224, 224))] {
        let want = load_image(dir().join(format!("expected/photo-224-{f}.png"))).unwrap();
        assert_eq!(max_diff(got.as_rgb8(), want.as_rgb8()), 0, "photo 97x61 -> 224x224 {f}");
    }
}

#[test]
fn decode_then_resize_matches_pillow() {
    let exp = expected();
    for (name, entry) in exp["images"].as_object().unwrap() {
        let img = load_image(dir().join(name)).unwrap();
        let mut worst = 0;
        for r in entry["resize"].as_array().unwrap() {
            let (w, h) = (r["width"].as_u64().unwrap() as u32, r["height"].as_u64().unwrap() as u32);
            let got = resize(&img, w, h, filter(r["filter"].as_str().unwrap()));
            worst = worst.max(max_diff(got.as_rgb8(), &base64(r["pixels"].as_str().unwrap())));
        }
        if !entry["resize"].as_array().unwrap().is_empty() {
            eprintln!("{name}: decoded here, resized here: max |ours - Pillow| = {worst}");
        }
        assert!(worst <= tolerance(name), "{name}: {worst}");
    }
}

#[test]
fn preprocess_matches_the_processors() {
    let exp = expected();
    let procs = &exp["processors"];
    // transformers 5 without torchvision: AutoImageProcessor picks the PIL backends.
    assert_eq!(procs["paligemma"]["class"], "SiglipImageProcessorPil");
    assert_eq!(procs["gemma3"]["class"], "Gemma3ImageProcessorPil");
    let mut n = 0;
    for (name, entry) in exp["images"].as_object().unwrap() {
        let Some(by) = entry.get("processor") else { continue };
        for (key, f) in [("paligemma", Resample::Bicubic), ("gemma3", Resample::Bilinear)] {
            assert_eq!(procs[key]["resample"], if f == Resample::Bicubic { "bicubic" } else { "bilinear" });
            let three = |v: &Value| -> [f32; 3] {
                let v: Vec<f32> = v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect();
                [v[0], v[1], v[2]]
            };
            let (m, s) = (three(&procs[key]["mean"]), three(&procs[key]["std"]));
            let want = f32s(by[key].as_str().unwrap());
            assert_eq!(want.len(), 3 * 32 * 32);
            let got = preprocess(&pillow_pixels(entry), 32, m, s, f);
            assert_eq!(got.len(), want.len());
            let d = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            assert!(d <= 1e-6, "{name} {key}: max |ours - transformers| = {d}");
            // The same arithmetic in the same order: equal to the bit.
            assert!(got.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits()), "{name} {key}");
            n += 1;
        }
    }
    assert_eq!(n, 4);
}

#[test]
fn preprocess_layout_is_channels_first() {
    // 2x1 image: a red pixel then a blue one, at its own size (no resampling).
    let img = Image::from_rgb8(2, 1, vec![255, 0, 0, 0, 0, 255]).unwrap();
    let same = Image::from_rgb8(2, 2, vec![255, 0, 0, 0, 0, 255, 0, 255, 0, 51, 102, 153]).unwrap();
    let v = preprocess(&same, 2, [0.5; 3], [0.5; 3], Resample::Bicubic);
    #[rustfmt::skip]
    let want = [1.0, -1.0, -1.0, (0.2f64 as f32 - 0.5) / 0.5,   // R plane, rows top to bottom
                -1.0, -1.0, 1.0, (0.4f64 as f32 - 0.5) / 0.5,   // G
                -1.0, 1.0, -1.0, (0.6f64 as f32 - 0.5) / 0.5];  // B
    assert_eq!(v, want);
    assert_eq!(preprocess(&img, 0, [0.5; 3], [0.5; 3], Resample::Bilinear), Vec::<f32>::new());
}

#[test]
fn an_image_at_the_target_size_is_untouched() {
    let exp = expected();
    for name in ["photo.png", "grey.png", "rgba.png"] {
        let img = pillow_pixels(&exp["images"][name]);
        for f in [Resample::Bicubic, Resample::Bilinear] {
            // Pillow returns a copy without resampling; so does resize.
            assert_eq!(resize(&img, img.width(), img.height(), f), img, "{name} {f:?}");
        }
    }
    let square = Image::from_rgb8(3, 3, (0..27).map(|i| (i * 37 % 256) as u8).collect()).unwrap();
    let v = preprocess(&square, 3, [0.0; 3], [1.0; 3], Resample::Bicubic);
    let want: Vec<f32> = (0..3)
        .flat_map(|c| (0..9).map(move |p| ((p * 3 + c) * 37 % 256) as f64 * (1.0 / 255.0)))
        .map(|x| x as f32)
        .collect();
    assert_eq!(v, want);
}

#[test]
fn degenerate_sizes_do_not_panic() {
    let img = Image::from_rgb8(5, 3, vec![200; 45]).unwrap();
    assert_eq!(resize(&img, 0, 4, Resample::Bicubic).as_rgb8().len(), 0);
    assert_eq!(resize(&img, 4, 0, Resample::Bilinear).as_rgb8().len(), 0);
    let empty = Image::from_rgb8(0, 0, vec![]).unwrap();
    assert_eq!(resize(&empty, 2, 2, Resample::Bicubic).as_rgb8(), [0; 12]);
    // A single pixel spread over a large image, and a long thin one squeezed to one pixel.
    let one = Image::from_rgb8(1, 1, vec![10, 20, 30]).unwrap();
    let big = resize(&one, 300, 7, Resample::Bicubic);
    assert!(big.as_rgb8().chunks(3).all(|p| p == [10, 20, 30]));
    let line = Image::from_rgb8(1000, 1, (0..3000).map(|i| (i % 251) as u8).collect()).unwrap();
    assert_eq!(resize(&line, 1, 1, Resample::Bilinear).width(), 1);
    assert!(matches!(Image::from_rgb8(2, 2, vec![0; 11]), Err(Error::Invalid(_))));
}

#[test]
fn resample_from_pillow_numbers() {
    assert_eq!(Resample::from_pil(2), Some(Resample::Bilinear));
    assert_eq!(Resample::from_pil(3), Some(Resample::Bicubic));
    for unsupported in [0, 1, 4, 5, 6] {
        assert_eq!(Resample::from_pil(unsupported), None);
    }
}

fn err(rel: &str) -> (Error, String) {
    let e = load_image(dir().join(rel)).expect_err(rel);
    let msg = e.to_string();
    let file = Path::new(rel).file_name().unwrap().to_str().unwrap();
    assert!(msg.contains(file), "{rel}: the message does not name the file: {msg}");
    eprintln!("{rel}: {msg}");
    (e, msg)
}

#[test]
fn bad_files_give_named_errors() {
    let (e, msg) = err("bad/text.png");
    assert!(matches!(e, Error::NotAnImage { .. }), "{e:?}");
    assert!(msg.contains("PNG, JPEG or WebP"), "{msg}");

    let (e, msg) = err("bad/picture.gif");
    assert!(matches!(&e, Error::UnsupportedImage { format, .. } if format == "GIF"), "{e:?}");
    assert!(msg.contains("GIF") && msg.contains("PNG, JPEG or WebP"), "{msg}");

    let (e, msg) = err("bad/truncated.jpg");
    assert!(matches!(e, Error::Format { .. }), "{e:?}");
    assert!(msg.contains("truncated JPEG"), "{msg}");

    let (e, msg) = err("bad/corrupt.png");
    assert!(matches!(e, Error::Format { .. }), "{e:?}");
    assert!(msg.contains("corrupt or truncated PNG"), "{msg}");

    for (rel, w, h) in [("bad/huge.png", 100000, 100000), ("bad/huge.jpg", 60000, 50000)] {
        let t = std::time::Instant::now();
        let (e, msg) = err(rel);
        // Refused from the header: no time spent, no memory taken.
        assert!(t.elapsed().as_millis() < 500, "{rel}: {:?}", t.elapsed());
        assert!(
            matches!(e, Error::ImageTooLarge { width, height, max_pixels, .. }
                if (width, height, max_pixels) == (w, h, MAX_IMAGE_PIXELS)),
            "{e:?}"
        );
        assert!(msg.contains(&format!("{w}x{h}")) && msg.contains(&MAX_IMAGE_PIXELS.to_string()), "{msg}");
    }

    let e = load_image(dir().join("bad/no-such-file.png")).unwrap_err();
    assert!(matches!(e, Error::Io { .. }) && e.to_string().contains("no-such-file.png"), "{e}");
    for bytes in [&b""[..], b"\x89PN", b"\xFF\xD8\xFF", b"RIFF\0\0\0\0WEBP", b"BM is a car", b"P2: not an image"] {
        let e = decode_image(bytes, "request image 3").unwrap_err();
        assert!(e.to_string().starts_with("request image 3: "), "{e}");
        assert!(matches!(e, Error::NotAnImage { .. } | Error::Format { .. }), "{bytes:?}: {e:?}");
    }
}

/// Every prefix and many corruptions of the good files: an error or a picture, never a panic; a cut file
/// is an error.
#[test]
fn cut_and_corrupted_files_never_panic() {
    for name in ["photo.jpg", "photo.png", "photo.webp", "exif-rotated.jpg", "rgba.png", "palette.png"] {
        let bytes = std::fs::read(dir().join(name)).unwrap();
        let step = (bytes.len() / 150).max(1);
        for n in (0..bytes.len()).step_by(step) {
            // PNG's last 12 bytes are its empty IEND chunk, which a decoder need not see.
            let must_fail = !name.ends_with(".png") || n + 12 < bytes.len();
            let r = decode_image(&bytes[..n], name);
            assert!(!must_fail || r.is_err(), "{name} cut to {n} of {} bytes decoded", bytes.len());
        }
        let mut state = 0x2545F4914F6CDD1Du64;
        for _ in 0..200 {
            let mut bad = bytes.clone();
            for _ in 0..4 {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let i = (state % bad.len() as u64) as usize;
                bad[i] = (state >> 32) as u8;
            }
            if let Ok(img) = decode_image(&bad, name) {
                assert_eq!(img.as_rgb8().len(), img.width() as usize * img.height() as usize * 3);
            }
        }
    }
}
