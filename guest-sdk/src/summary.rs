//! What a successful run hands back.

use serde::Serialize;

/// The result of a successful run: short markdown `text` for a human or an
/// agent to read, plus optional structured `data` (any [`Serialize`] value,
/// sent as JSON text; `null` when there is none).
///
/// ```
/// use skillbox_sdk::Summary;
///
/// let summary = Summary::new("Found **3** files").with_data(serde_json::json!({ "files": 3 }));
/// assert_eq!(summary.text(), "Found **3** files");
/// assert_eq!(summary.data_json(), Some(r#"{"files":3}"#));
///
/// let plain: Summary = "done".into();
/// assert_eq!(plain.data_json(), Some("null"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    text: String,
    data: Result<String, String>,
}

impl Summary {
    /// A summary with this text and `null` data.
    pub fn new(text: impl Into<String>) -> Self {
        Summary {
            text: text.into(),
            data: Ok("null".to_owned()),
        }
    }

    /// Attaches structured data, serialized to JSON.
    ///
    /// If `data` cannot be serialized (for example a map with non-string
    /// keys), the run fails with [`ErrorKind::Failed`](crate::ErrorKind::Failed)
    /// naming the serialization error, rather than silently dropping it.
    pub fn with_data(mut self, data: impl Serialize) -> Self {
        self.data = serde_json::to_string(&data).map_err(|e| e.to_string());
        self
    }

    /// The summary text.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The data as JSON text (`"null"` by default), or `None` if the value
    /// passed to [`with_data`](Summary::with_data) failed to serialize.
    pub fn data_json(&self) -> Option<&str> {
        self.data.as_deref().ok()
    }

    pub(crate) fn into_parts(self) -> (String, Result<String, String>) {
        (self.text, self.data)
    }
}

impl From<String> for Summary {
    fn from(text: String) -> Self {
        Summary::new(text)
    }
}

impl From<&str> for Summary {
    fn from(text: &str) -> Self {
        Summary::new(text)
    }
}

/// A byte count for a summary: `12 B`, `1.5 KiB`, `3.0 GiB` (powers of
/// 1024, one decimal).
///
/// ```
/// use skillbox_sdk::human_bytes;
///
/// assert_eq!(human_bytes(12), "12 B");
/// assert_eq!(human_bytes(1536), "1.5 KiB");
/// assert_eq!(human_bytes(3 << 30), "3.0 GiB");
/// ```
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}
