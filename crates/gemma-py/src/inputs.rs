//! Python values into the engine's inputs: an image given as a path, a `PIL.Image` or a NumPy array becomes
//! an RGB [`Image`]; a list of chat messages (transformers' shape: `{"role", "content"}`, the content a string
//! or a list of `{"type": "text", "text"}` / `{"type": "image", "image" | "path"}` parts) becomes the
//! template's [`Message`]s and the images in the order they appear.

use std::path::PathBuf;

use gemma::runtime::image::{load_image, Image};
use gemma::tokenizer::Message;
use numpy::{PyReadonlyArray3, PyUntypedArrayMethods};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyString};

use crate::errors::{to_py, value_error};

/// Where an image part stands in a Gemma 3 message's text (the chat template's rendering of an image part,
/// which `multimodal::gemma3_prompt` expands to the image's soft tokens).
pub const IMAGE_MARKER: &str = "<start_of_image>";

/// One image: a path (`str` or `os.PathLike`: PNG, JPEG or WebP, EXIF orientation applied as transformers'
/// `load_image` does), a `PIL.Image.Image` (converted to RGB, as the processors do), or a NumPy array of
/// shape (height, width, 3), dtype uint8, RGB.
pub fn image(obj: &Bound<'_, PyAny>) -> PyResult<Image> {
    if obj.is_instance_of::<PyString>() || obj.hasattr("__fspath__")? {
        let path: PathBuf = obj.extract()?;
        return load_image(&path).map_err(to_py);
    }
    if obj.hasattr("convert")? && obj.hasattr("tobytes")? && obj.hasattr("size")? {
        let rgb = obj.call_method1("convert", ("RGB",))?;
        let (w, h): (u32, u32) = rgb.getattr("size")?.extract()?;
        let data = rgb.call_method0("tobytes")?;
        let data = data.cast::<PyBytes>()?.as_bytes().to_vec();
        return Image::from_rgb8(w, h, data).map_err(to_py);
    }
    if let Ok(a) = obj.extract::<PyReadonlyArray3<'_, u8>>() {
        let shape = a.shape().to_vec();
        if shape[2] != 3 {
            return Err(value_error(format!("an image array must be (height, width, 3) RGB, got shape {shape:?}")));
        }
        // A view that is not C-contiguous (a slice, a transposed array) is copied in row-major order.
        let data = a.as_array().iter().copied().collect();
        return Image::from_rgb8(shape[1] as u32, shape[0] as u32, data).map_err(to_py);
    }
    let what = obj.get_type().name().map(|n| n.to_string()).unwrap_or_default();
    let hint = if obj.hasattr("dtype")? { format!(" (an array must be uint8 of shape (height, width, 3), got dtype {})", obj.getattr("dtype")?) } else { String::new() };
    Err(value_error(format!("an image is a path, a PIL.Image or a NumPy array, not a {what}{hint}")))
}

/// Every image of a list.
pub fn images(list: Option<&Bound<'_, PyAny>>) -> PyResult<Vec<Image>> {
    let Some(list) = list else { return Ok(Vec::new()) };
    if list.is_instance_of::<PyString>() || list.hasattr("__fspath__")? || list.hasattr("convert")? || list.hasattr("dtype")? {
        return Err(value_error("images= takes a list of images: images=[image]"));
    }
    list.try_iter()?.map(|o| image(&o?)).collect()
}

/// A conversation from Python: its messages for the template and its images in order. With `image_markers`
/// (Gemma 3) an image part stands in the text as `<start_of_image>`, and a message with images has each text
/// part trimmed, as Gemma 3's template renders a list of parts (the server does the same); a text part may
/// not hold the marker itself. Without (a text-only model), an image part is an error.
pub fn messages(list: &Bound<'_, PyAny>, image_markers: bool) -> PyResult<(Vec<Message>, Vec<Image>)> {
    let mut out = Vec::new();
    let mut imgs = Vec::new();
    if list.is_instance_of::<PyString>() || list.is_instance_of::<PyDict>() {
        return Err(value_error("messages is a list of {\"role\": ..., \"content\": ...} dicts"));
    }
    for (i, m) in list.try_iter()?.enumerate() {
        let m = m?;
        let m = m.cast::<PyDict>().map_err(|_| value_error(format!("messages[{i}] is not a dict with \"role\" and \"content\"")))?;
        let field = |k: &str| -> PyResult<Bound<'_, PyAny>> {
            m.get_item(k)?.ok_or_else(|| value_error(format!("messages[{i}] has no \"{k}\"")))
        };
        let role: String = field("role")?.extract().map_err(|_| value_error(format!("messages[{i}][\"role\"] is not a string")))?;
        let content = field("content")?;
        let text = if let Ok(s) = content.extract::<String>() {
            s
        } else if let Ok(parts) = content.cast::<PyList>() {
            let has_image = parts.iter().any(|p| p.cast::<PyDict>().ok().and_then(|d| d.get_item("type").ok().flatten()).is_some_and(|t| t.extract::<String>().is_ok_and(|t| t == "image")));
            let mut text = String::new();
            for (j, p) in parts.iter().enumerate() {
                let at = format!("messages[{i}][\"content\"][{j}]");
                let p = p.cast::<PyDict>().map_err(|_| value_error(format!("{at} is not a dict")))?;
                let kind: String = p.get_item("type")?.ok_or_else(|| value_error(format!("{at} has no \"type\"")))?.extract()?;
                match kind.as_str() {
                    "text" => {
                        let t: String = p.get_item("text")?.ok_or_else(|| value_error(format!("{at} has no \"text\"")))?.extract()?;
                        if image_markers && t.contains(IMAGE_MARKER) {
                            return Err(value_error(format!("{at}: the text holds `{IMAGE_MARKER}`, which stands for an image: give images as {{\"type\": \"image\", \"image\": ...}} parts")));
                        }
                        text.push_str(if has_image && image_markers { t.trim() } else { &t });
                    }
                    "image" => {
                        if !image_markers {
                            return Err(value_error(format!("{at}: an image part, but this model takes no images in a conversation (a text-only model, or PaliGemma: use generate(task, images=[...]))")));
                        }
                        let img = match (p.get_item("image")?, p.get_item("path")?) {
                            (Some(o), _) | (None, Some(o)) => image(&o)?,
                            (None, None) => return Err(value_error(format!("{at}: an image part needs \"image\" (a path, PIL.Image or array) or \"path\""))),
                        };
                        imgs.push(img);
                        text.push_str(IMAGE_MARKER);
                    }
                    other => return Err(value_error(format!("{at}: unsupported part type `{other}`: only \"text\" and \"image\""))),
                }
            }
            text
        } else {
            return Err(value_error(format!("messages[{i}][\"content\"] is neither a string nor a list of parts")));
        };
        out.push(Message::new(role, text));
    }
    Ok((out, imgs))
}
