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

/// `.env.example`: every variable, commented out, under what it is for.
/// A value after `=` is always the default; a variable without one has
/// nothing after `=`, and its note gives an example value instead.
pub fn env_example() -> String {
    let mut example = comment(
        "clerk-role-sync configuration. Copy to .env (which git ignores) and \
         uncomment what you need. Every variable is commented out, under a note on \
         what it is for. A line with a value shows the variable's default, which \
         applies while it is unset; a variable without a default has an empty line, \
         and its note gives an example value to replace with your own. \
         `clerk-role-sync --help` prints the same list; `clerk-role-sync env-example > \
         .env.example` writes this file.",
    );
    for variable in VARIABLES {
        example.push('\n');
        example.push_str(&comment(&about(*variable)));
        let value = match variable.default() {
            DefaultValue::Text(text) => text,
            DefaultValue::Unset { .. } => "",
        };
        example.push_str(&format!("# {}={value}\n", variable.name()));
    }
    example
}

/// What a variable is for, what it takes, and its default, or what leaving
/// it unset means and an example value.
fn about(variable: &dyn Declared) -> String {
    let mut about = variable.help().to_owned();
    if let Some(allowed) = variable.allowed() {
        about.push_str(&format!("; {allowed}"));
    }
    match variable.default() {
        DefaultValue::Text(text) => about.push_str(&format!("; default: `{text}`")),
        DefaultValue::Unset { meaning, example } => {
            about.push_str(&format!("; no default (unset: {meaning})"));
            if !example.is_empty() {
                about.push_str(&format!("; example: `{example}`"));
            }
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Each variable's entry in `.env.example`: its note and its line.
    fn entries(example: &str) -> Vec<(String, &str)> {
        example
            .split("\n\n")
            .skip(1)
            .map(|entry| {
                let (note, line) = entry
                    .trim_end()
                    .rsplit_once('\n')
                    .expect("a note and a line");
                (note.replace("\n# ", " "), line)
            })
            .collect()
    }

    #[test]
    fn env_example_shows_a_value_only_where_it_is_the_default() {
        let example = env_example();
        let entries = entries(&example);
        assert_eq!(entries.len(), VARIABLES.len());
        for ((note, line), variable) in entries.iter().zip(VARIABLES) {
            let name = variable.name();
            match variable.default() {
                DefaultValue::Text(text) => {
                    assert_eq!(*line, format!("# {name}={text}"));
                    assert!(note.contains(&format!("default: `{text}`")), "{note}");
                }
                DefaultValue::Unset { example, .. } => {
                    assert_eq!(*line, format!("# {name}="), "no default, no value");
                    assert!(note.contains("no default"), "{note}");
                    if !example.is_empty() {
                        assert!(note.contains(&format!("example: `{example}`")), "{note}");
                    }
                }
            }
        }
        // The header says what a value on a line means.
        assert!(example.starts_with("# clerk-role-sync configuration."));
        assert!(example.contains("shows the variable's default"));
    }
}
