//! Form pages the GOV.UK way: each field has a label, an optional hint, the admin's input kept after
//! an error and the message beside it; an error summary at the top links to each field. Templates
//! render a [`Fields`] with `{% call m::error_summary(form) %}` and `{% call m::field(f) %}` from
//! `templates/macros.html`.

use super::request::Form;

/// One input of a form.
#[derive(Debug, Clone)]
pub struct Field {
    pub name: &'static str,
    pub label: &'static str,
    /// The `type` attribute: text, password, email, number, url.
    pub kind: &'static str,
    pub hint: &'static str,
    pub autocomplete: &'static str,
    pub value: String,
    pub error: Option<String>,
}

impl Field {
    pub fn text(name: &'static str, label: &'static str) -> Field {
        Field {
            name,
            label,
            kind: "text",
            hint: "",
            autocomplete: "off",
            value: String::new(),
            error: None,
        }
    }

    /// A password input; its value is never sent back to the browser.
    pub fn password(name: &'static str, label: &'static str) -> Field {
        Field {
            kind: "password",
            ..Field::text(name, label)
        }
    }

    pub fn hint(mut self, hint: &'static str) -> Field {
        self.hint = hint;
        self
    }

    pub fn autocomplete(mut self, value: &'static str) -> Field {
        self.autocomplete = value;
        self
    }

    /// The `id` of the input (the error summary links to it).
    pub fn id(&self) -> String {
        format!("field-{}", self.name)
    }
}

/// The inputs of a form with their values and errors.
#[derive(Debug, Clone, Default)]
pub struct Fields {
    pub fields: Vec<Field>,
}

impl Fields {
    pub fn new(fields: Vec<Field>) -> Fields {
        Fields { fields }
    }

    /// Copies the submitted values into the fields (never passwords).
    pub fn keep(mut self, form: &Form) -> Fields {
        for f in &mut self.fields {
            if f.kind != "password" {
                f.value = form.get(f.name).unwrap_or_default();
            }
        }
        self
    }

    /// Marks a field as wrong.
    pub fn error(&mut self, name: &str, message: impl Into<String>) {
        if let Some(f) = self.fields.iter_mut().find(|f| f.name == name) {
            f.error = Some(message.into());
        }
    }

    pub fn has_errors(&self) -> bool {
        self.fields.iter().any(|f| f.error.is_some())
    }

    /// (input id, message) for the error summary, in form order.
    pub fn errors(&self) -> Vec<(String, String)> {
        self.fields
            .iter()
            .filter_map(|f| f.error.as_ref().map(|e| (f.id(), e.clone())))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_kept_except_passwords() {
        let form = Form::from_pairs(&[("username", "alice"), ("password", "secret")]);
        let mut fields = Fields::new(vec![
            Field::text("username", "Username"),
            Field::password("password", "Password"),
        ])
        .keep(&form);
        assert_eq!(fields.fields[0].value, "alice");
        assert_eq!(fields.fields[1].value, "");
        assert!(!fields.has_errors());
        fields.error("password", "Enter your password");
        assert_eq!(
            fields.errors(),
            vec![(
                "field-password".to_string(),
                "Enter your password".to_string()
            )]
        );
    }
}
