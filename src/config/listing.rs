//! The variables written out for people: the list `--help` ends with, and
//! `.env.example` (`clerk-role-sync env-example` prints it; a test keeps
//! the committed copy equal).

use super::variable::{Declared, DefaultValue};
use super::variables::VARIABLES;

/// The variables as `--help` prints them.
pub fn environment_help() -> String {
    let width = VARIABLES.iter().map(|v| v.name().len()).max().unwrap_or(0);
    let mut help = String::from(
        "Environment (also read from .env in the working directory; see .env.example):\n",
    );
    for variable in VARIABLES {
        let allowed = variable
            .allowed()
            .map(|allowed| format!(" [accepts: {allowed}]"))
            .unwrap_or_default();
        help.push_str(&format!(
            "  {:width$}  {}\n  {:width$}  [default: {}]{allowed}\n",
            variable.name(),
            variable.help(),
            "",
            variable.default().shown(),
        ));
    }
    help
}

/// `.env.example`: every variable, commented out, at its default (or an
/// example value where it has none), under what it is for.
pub fn env_example() -> String {
    let mut example = String::from(
        "# clerk-role-sync configuration. Copy to .env (which git ignores) and fill in\n\
         # what you need; every variable below is commented out, at its default (or,\n\
         # where it has none, at an example value). `clerk-role-sync --help` prints\n\
         # the same list; `clerk-role-sync env-example > .env.example` writes this file.\n",
    );
    for variable in VARIABLES {
        example.push('\n');
        example.push_str(&comment(&about(*variable)));
        let value = match variable.default() {
            DefaultValue::Text(text) => text,
            DefaultValue::Unset { example, .. } => example,
        };
        example.push_str(&format!("# {}={value}\n", variable.name()));
    }
    example
}

/// What a variable is for, what it takes and what leaving it unset means.
fn about(variable: &dyn Declared) -> String {
    let mut about = variable.help().to_owned();
    if let Some(allowed) = variable.allowed() {
        about.push_str(&format!("; {allowed}"));
    }
    if let DefaultValue::Unset { meaning, .. } = variable.default() {
        about.push_str(&format!("; unset: {meaning}"));
    }
    about.push('.');
    about
}

/// `text` as `#` comment lines of at most 78 characters.
fn comment(text: &str) -> String {
    const WIDTH: usize = 78;
    let mut lines = String::new();
    let mut line = String::from("#");
    for word in text.split_whitespace() {
        if line.len() > 1 && line.len() + 1 + word.len() > WIDTH {
            lines.push_str(&line);
            lines.push('\n');
            line = String::from("#");
        }
        line.push(' ');
        line.push_str(word);
    }
    lines.push_str(&line);
    lines.push('\n');
    lines
}
