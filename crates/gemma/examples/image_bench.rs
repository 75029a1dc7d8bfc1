//! Image input timing: decode a file, resize it with Pillow's BICUBIC and BILINEAR, and preprocess it as
//! PaliGemma's and Gemma 3's processors do; best of a few runs, single-threaded.
//!
//! `cargo run --release -p gemma --example image_bench -- IMAGE [SIZE] [OUT_PREFIX]` (SIZE defaults to 896).
//! With OUT_PREFIX, the decoded and the resized images are written as raw RGB bytes to OUT_PREFIX.decoded.rgb,
//! OUT_PREFIX.bicubic.rgb and OUT_PREFIX.bilinear.rgb, to compare with Pillow's
//! `np.asarray(load_image(IMAGE))` and `np.asarray(load_image(IMAGE).resize((SIZE, SIZE), ...))`.

use std::time::{Duration, Instant};

use gemma::runtime::image::{load_image, preprocess, resize, Resample};

fn best<T>(runs: usize, mut f: impl FnMut() -> T) -> (Duration, T) {
    let mut out = f();
    let mut best = Duration::MAX;
    for _ in 0..runs {
        let t = Instant::now();
        out = f();
        best = best.min(t.elapsed());
    }
    (best, out)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let Some(path) = args.next() else {
        eprintln!("usage: image_bench IMAGE [SIZE] [OUT_PREFIX]");
        std::process::exit(2);
    };
    let size: u32 = args.next().map(|s| s.parse().expect("SIZE: a number")).unwrap_or(896);
    let out = args.next();
    let (t_decode, img) = best(3, || load_image(&path));
    let img = img.unwrap_or_else(|e| {
        eprintln!("{e}");
        std::process::exit(1);
    });
    println!("{path}: {}x{}; decode {:.1} ms", img.width(), img.height(), t_decode.as_secs_f64() * 1e3);
    if let Some(prefix) = &out {
        std::fs::write(format!("{prefix}.decoded.rgb"), img.as_rgb8()).expect("writing the decoded image");
    }
    for (name, f) in [("bicubic", Resample::Bicubic), ("bilinear", Resample::Bilinear)] {
        let (t, r) = best(3, || resize(&img, size, size, f));
        let (tp, _) = best(3, || preprocess(&img, size, [0.5; 3], [0.5; 3], f));
        println!("  {name} -> {size}x{size}: resize {:.1} ms, preprocess {:.1} ms", t.as_secs_f64() * 1e3,
                 tp.as_secs_f64() * 1e3);
        if let Some(prefix) = &out {
            std::fs::write(format!("{prefix}.{name}.rgb"), r.as_rgb8()).expect("writing the resized image");
        }
    }
}
