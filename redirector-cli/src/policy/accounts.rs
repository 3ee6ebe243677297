//! The groups and users a policy names, resolved by name or number from the system's
//! databases, and kept with the name they had.

use serde::{Deserialize, Serialize};

use crate::error::Error;

/// A group or user, by number, with the name it had when the policy was made.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Id {
    pub id: u32,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub name: Option<String>,
}

impl std::fmt::Display for Id {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.name {
            Some(name) => write!(f, "{name} ({})", self.id),
            None => write!(f, "{}", self.id),
        }
    }
}

/// Resolves a group given by name or number.
pub(crate) fn resolve_group(group: &str) -> Result<Id, Error> {
    use nix::unistd::{Gid, Group};
    let found = |g: Option<Group>| g.map(|g| (g.gid.as_raw(), g.name));
    resolve(
        "group",
        group,
        |gid| Group::from_gid(Gid::from_raw(gid)).map(found),
        |name| Group::from_name(name).map(found),
        &format!(": create it with `groupadd --system {group}`"),
    )
}

/// Resolves a user given by name or number.
pub(crate) fn resolve_user(user: &str) -> Result<Id, Error> {
    use nix::unistd::{Uid, User};
    let found = |u: Option<User>| u.map(|u| (u.uid.as_raw(), u.name));
    resolve(
        "user",
        user,
        |uid| User::from_uid(Uid::from_raw(uid)).map(found),
        |name| User::from_name(name).map(found),
        "",
    )
}

/// A name is looked up; a number is looked up too, but a number without a name (in
/// /etc/group or /etc/passwd) still names an id the kernel can match.
fn resolve(
    kind: &str,
    text: &str,
    by_id: impl FnOnce(u32) -> nix::Result<Option<(u32, String)>>,
    by_name: impl FnOnce(&str) -> nix::Result<Option<(u32, String)>>,
    missing_hint: &str,
) -> Result<Id, Error> {
    let number = text.parse::<u32>().ok();
    let lookup = match number {
        Some(id) => by_id(id),
        None => by_name(text),
    };
    match (lookup, number) {
        (Ok(Some((id, name))), _) => Ok(Id {
            id,
            name: Some(name),
        }),
        (Ok(None), Some(id)) => Ok(Id { id, name: None }),
        (Ok(None), None) => Err(Error::Config(format!(
            "{kind} '{text}' does not exist{missing_hint}"
        ))),
        (Err(e), _) => Err(Error::Config(format!(
            "cannot look up {kind} '{text}': {e}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_group_says_how_to_create_it() {
        let error = resolve_group("no-such-group-b324").unwrap_err().to_string();
        assert!(
            error.contains("groupadd --system no-such-group-b324"),
            "{error}"
        );
    }

    #[test]
    fn groups_and_users_resolve_by_name_and_number() {
        assert_eq!(resolve_group("0").unwrap().id, 0);
        assert_eq!(resolve_group("root").unwrap().id, 0);
        assert_eq!(resolve_user("root").unwrap().id, 0);
        assert_eq!(resolve_user("0").unwrap().name.as_deref(), Some("root"));
        for unnamed in [resolve_group("54321"), resolve_user("54321")] {
            assert_eq!(
                unnamed.unwrap(),
                Id {
                    id: 54321,
                    name: None
                }
            );
        }
        assert_eq!(
            resolve_user("no-such-user-b324").unwrap_err().to_string(),
            Error::Config("user 'no-such-user-b324' does not exist".into()).to_string()
        );
    }
}
