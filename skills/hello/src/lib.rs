//! `hello`: the smallest possible skill.
//!
//! Input: `{"name": "Ada"}` (`name` defaults to `"world"`). Logs a line,
//! reports progress, and returns a greeting as text and as data.

use serde::{Deserialize, Serialize};
use skillbox_sdk::{Error, Summary, info, progress};

/// Input of the hello skill.
#[derive(Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
struct Input {
    /// Who to greet.
    #[serde(default = "default_name")]
    name: String,
}

fn default_name() -> String {
    "world".to_owned()
}

/// The structured result.
#[derive(Serialize)]
struct Greeting {
    greeting: String,
}

fn hello(input: Input) -> Result<Summary, Error> {
    info!("greeting {}", input.name);
    progress::report(0.5, "composing the greeting");
    let greeting = format!("Hello, {}! 👋", input.name);
    progress::report(1.0, "done");
    Ok(Summary::new(greeting.clone()).with_data(Greeting { greeting }))
}

skillbox_sdk::export!(hello);

#[cfg(test)]
mod tests {
    #[test]
    fn input_schema_is_current() {
        skillbox_sdk::schema::check::<super::Input>(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/input.schema.json"
        ));
    }
}
