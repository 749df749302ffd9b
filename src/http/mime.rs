//! Content types for file extensions, as the static file server sends them.
//!
//! A short table of the types a web site actually serves, rather than a full registry: an
//! unknown extension gets `application/octet-stream`, which browsers download instead of
//! guessing, so a missing entry is safe. Textual types carry `; charset=utf-8` because that is
//! what files written today are, and without it browsers fall back to a locale-dependent guess.

use std::path::Path;

/// What a file with no extension, or an extension not in [`TABLE`], is served as.
pub(crate) const FALLBACK: &str = "application/octet-stream";

/// Extension (lowercase, without the dot) to content type.
///
/// Looked up case-insensitively by [`content_type`]; a linear scan is fine at this size and
/// needs no allocation to lowercase the extension.
const TABLE: &[(&str, &str)] = &[
    // Documents and code.
    ("html", "text/html; charset=utf-8"),
    ("htm", "text/html; charset=utf-8"),
    ("xhtml", "application/xhtml+xml"),
    ("css", "text/css; charset=utf-8"),
    // RFC 9239 made text/javascript the one type for JavaScript, modules included.
    ("js", "text/javascript; charset=utf-8"),
    ("mjs", "text/javascript; charset=utf-8"),
    ("cjs", "text/javascript; charset=utf-8"),
    // JSON is UTF-8 by definition (RFC 8259), so it takes no charset parameter.
    ("json", "application/json"),
    ("map", "application/json"),
    ("jsonld", "application/ld+json"),
    ("webmanifest", "application/manifest+json"),
    ("txt", "text/plain; charset=utf-8"),
    ("csv", "text/csv; charset=utf-8"),
    ("md", "text/markdown; charset=utf-8"),
    ("xml", "text/xml; charset=utf-8"),
    ("rss", "application/rss+xml"),
    ("atom", "application/atom+xml"),
    ("ics", "text/calendar; charset=utf-8"),
    ("yaml", "application/yaml"),
    ("yml", "application/yaml"),
    ("toml", "application/toml"),
    ("wasm", "application/wasm"),
    ("pdf", "application/pdf"),
    // Images.
    ("svg", "image/svg+xml"),
    ("png", "image/png"),
    ("apng", "image/apng"),
    ("jpg", "image/jpeg"),
    ("jpeg", "image/jpeg"),
    ("gif", "image/gif"),
    ("webp", "image/webp"),
    ("avif", "image/avif"),
    ("jxl", "image/jxl"),
    ("bmp", "image/bmp"),
    ("tif", "image/tiff"),
    ("tiff", "image/tiff"),
    // image/vnd.microsoft.icon is the registered name, but x-icon is what browsers expect.
    ("ico", "image/x-icon"),
    // Fonts.
    ("woff", "font/woff"),
    ("woff2", "font/woff2"),
    ("ttf", "font/ttf"),
    ("otf", "font/otf"),
    ("eot", "application/vnd.ms-fontobject"),
    // Audio and video.
    ("mp4", "video/mp4"),
    ("m4v", "video/mp4"),
    ("webm", "video/webm"),
    ("ogv", "video/ogg"),
    ("mov", "video/quicktime"),
    ("mp3", "audio/mpeg"),
    ("m4a", "audio/mp4"),
    ("aac", "audio/aac"),
    ("ogg", "audio/ogg"),
    ("oga", "audio/ogg"),
    ("opus", "audio/ogg"),
    ("wav", "audio/wav"),
    ("flac", "audio/flac"),
    ("vtt", "text/vtt; charset=utf-8"),
    // Archives.
    ("zip", "application/zip"),
    ("gz", "application/gzip"),
    ("tgz", "application/gzip"),
    ("tar", "application/x-tar"),
    ("7z", "application/x-7z-compressed"),
];

/// The content type for `path`, from its extension (case-insensitive); [`FALLBACK`] when the
/// extension is missing, not UTF-8, or unknown.
///
/// Only the last extension counts, so `app.js.gz` is `application/gzip`: a file asked for by
/// that name is sent as stored. The server looks up precompressed variants by the original's
/// name instead, so they keep the original's type.
pub(crate) fn content_type(path: &Path) -> &'static str {
    let Some(ext) = path.extension().and_then(|e| e.to_str()) else {
        return FALLBACK;
    };
    TABLE
        .iter()
        .find(|(known, _)| known.eq_ignore_ascii_case(ext))
        .map_or(FALLBACK, |&(_, ty)| ty)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_extensions_in_any_case() {
        assert_eq!(
            content_type(Path::new("a/index.html")),
            "text/html; charset=utf-8"
        );
        assert_eq!(content_type(Path::new("LOGO.PNG")), "image/png");
        assert_eq!(
            content_type(Path::new("app.Mjs")),
            "text/javascript; charset=utf-8"
        );
        assert_eq!(content_type(Path::new("font.woff2")), "font/woff2");
        assert_eq!(content_type(Path::new("app.js.gz")), "application/gzip");
    }

    #[test]
    fn unknown_or_missing_extension_falls_back() {
        assert_eq!(content_type(Path::new("Makefile")), FALLBACK);
        assert_eq!(content_type(Path::new("data.xyz")), FALLBACK);
        assert_eq!(content_type(Path::new(".hidden")), FALLBACK);
        assert_eq!(content_type(Path::new("trailing.")), FALLBACK);
    }

    #[test]
    fn table_keys_are_lowercase_and_unique() {
        for (i, (ext, _)) in TABLE.iter().enumerate() {
            assert_eq!(*ext, ext.to_ascii_lowercase(), "{ext}");
            assert!(
                TABLE[i + 1..].iter().all(|(other, _)| other != ext),
                "{ext} twice"
            );
        }
    }
}
