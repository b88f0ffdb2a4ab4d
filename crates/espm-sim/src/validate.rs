//! `POST /customer` validation as PM does it: the XSD's facets and enumerations (schema errors,
//! `-100`) and PM's documented rules (`-200`). See the crate README for the exact list.

use espm_model::{Address, NewCustomer};

use crate::enums::{COUNTRIES, ENERGY_STAR_PARTNER_TYPES, PRIMARY_BUSINESS, STATES};
use crate::world::SimError;

/// The nonalphanumeric characters PM's password rule counts (`account.xsd`).
pub const PASSWORD_SPECIALS: &str = "~!@#$%^&*_-+=`|\\(){}[]:;\"'<>,.?/";

/// Canadian province and territory codes among [`STATES`]; the others are the US's.
pub const CANADIAN_PROVINCES: &[&str] = &[
    "AB", "BC", "MB", "NB", "NL", "NS", "NT", "NU", "ON", "PE", "QC", "SK", "YT",
];

/// PM's password rule (`account.xsd`): at least 8 characters (at most 120) and 3 of the 4
/// classes: uppercase, lowercase, digits 0-9, and the nonalphanumerics in [`PASSWORD_SPECIALS`].
/// Other characters are allowed but count for no class.
pub fn password_problem(password: &str) -> Option<String> {
    let len = password.chars().count();
    if !(8..=120).contains(&len) {
        return Some(format!(
            "The password must be 8 to 120 characters long (it has {len})."
        ));
    }
    let classes = [
        password.chars().any(|c| c.is_ascii_uppercase()),
        password.chars().any(|c| c.is_ascii_lowercase()),
        password.chars().any(|c| c.is_ascii_digit()),
        password.chars().any(|c| PASSWORD_SPECIALS.contains(c)),
    ];
    let have = classes.iter().filter(|c| **c).count();
    (have < 3).then(|| {
        format!(
            "The password must contain 3 of the 4 following: uppercase characters, lowercase \
             characters, base 10 digits (0 through 9), nonalphanumeric characters \
             {PASSWORD_SPECIALS} (it has {have})."
        )
    })
}

fn schema(message: String) -> SimError {
    SimError::Invalid(format!(
        "The request body failed schema validation: {message}"
    ))
}

fn length(field: &str, value: &str, min: usize, max: usize) -> Result<(), SimError> {
    let n = value.chars().count();
    if n < min || n > max {
        return Err(schema(format!(
            "cvc-length-valid: {field} must be {min} to {max} characters (it has {n})."
        )));
    }
    Ok(())
}

fn enumeration(field: &str, value: &str, allowed: &[&str]) -> Result<(), SimError> {
    if allowed.contains(&value) {
        return Ok(());
    }
    Err(schema(format!(
        "cvc-enumeration-valid: Value '{value}' is not facet-valid with respect to the \
         enumeration of {field}. It must be a value from the enumeration."
    )))
}

fn address(a: &Address) -> Result<(), SimError> {
    length("address1", &a.address1, 1, 100)?;
    if let Some(v) = &a.address2 {
        length("address2", v, 1, 100)?;
    }
    length("city", &a.city, 1, 100)?;
    if let Some(v) = &a.county {
        length("county", v, 1, 40)?;
    }
    length("postalCode", a.postal_code.as_deref().unwrap_or(""), 1, 20)?;
    if let Some(v) = &a.other_state {
        length("otherState", v, 1, 50)?;
    }
    let Some(country) = a.country.as_deref() else {
        return Err(schema(
            "cvc-complex-type.4: Attribute 'country' must appear on element 'address'.".into(),
        ));
    };
    enumeration("country", country, COUNTRIES)?;
    if let Some(state) = a.state.as_deref() {
        enumeration("state", state, STATES)?;
    }
    let canadian = |s: &str| CANADIAN_PROVINCES.contains(&s);
    match (country, a.state.as_deref()) {
        ("US", None) | ("CA", None) => Err(SimError::Rejected(format!(
            "A state or province is required for an address in {country}."
        ))),
        ("US", Some(s)) if canadian(s) => Err(SimError::Rejected(format!(
            "{s} is a Canadian province, not a state of the United States."
        ))),
        ("CA", Some(s)) if !canadian(s) => Err(SimError::Rejected(format!(
            "{s} is not a Canadian province or territory."
        ))),
        ("US" | "CA", Some(_)) => Ok(()),
        (_, Some(s)) => Err(SimError::Rejected(format!(
            "state {s} is only for addresses in the United States and Canada; use otherState \
             for {country}."
        ))),
        (_, None) => Ok(()),
    }
}

/// Check a `POST /customer` body: the XSD's lengths and enumerations are `Invalid` (`-100`),
/// PM's rules (password strength, a state for US/Canadian addresses, a partner type for an
/// ENERGY STAR partner) are `Rejected` (`-200`).
pub fn new_customer(new: &NewCustomer) -> Result<(), SimError> {
    length("username", &new.username, 1, 60)?;
    let c = &new.contact;
    length("firstName", &c.first_name, 1, 100)?;
    length("lastName", &c.last_name, 1, 100)?;
    length("email", &c.email, 1, 100)?;
    length("jobTitle", &c.job_title, 1, 100)?;
    length("phone", &c.phone, 1, 30)?;
    address(&c.address)?;
    let o = &new.organization;
    if !o.name.is_empty() {
        length("organization name", &o.name, 1, 1000)?;
    }
    enumeration("primaryBusiness", &o.primary_business, PRIMARY_BUSINESS)?;
    if let Some(v) = &o.other_business_description {
        length("otherBusinessDescription", v, 1, 1000)?;
    }
    if let Some(t) = &o.energy_star_partner_type {
        enumeration("energyStarPartnerType", t, ENERGY_STAR_PARTNER_TYPES)?;
    } else if o.energy_star_partner {
        return Err(SimError::Rejected(
            "energyStarPartnerType is required when energyStarPartner is true.".into(),
        ));
    }
    if let Some(problem) = password_problem(&new.password) {
        return Err(
            if new.password.chars().count() < 8 || new.password.chars().count() > 120 {
                schema(format!("cvc-length-valid: {problem}"))
            } else {
                SimError::Rejected(problem)
            },
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canadian_provinces_are_states() {
        for p in CANADIAN_PROVINCES {
            assert!(STATES.contains(p), "{p}");
        }
    }

    #[test]
    fn password_rule() {
        assert!(password_problem("Abcdefg1").is_none());
        assert!(password_problem("abcdefg1!").is_none());
        assert!(password_problem("ABCDEFG!1").is_none());
        assert!(password_problem("abcdefgh1").is_some(), "two classes");
        assert!(password_problem("Ab1!").is_some(), "too short");
        assert!(password_problem(&"Ab1!".repeat(31)).is_some(), "too long");
        assert!(
            password_problem("abc defg é1").is_some(),
            "space and é count for nothing"
        );
    }
}
