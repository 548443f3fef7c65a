//! Every reason a condition can carry and every reason of a `Normal` event: closed sets, so
//! docs/reference.md is checked against them (`tests/docs.rs`) and status readers can rely on them.

use super::table::Kind;

/// An enum of names with `ALL` and `as_str` (the variant's name).
macro_rules! closed_set {
    ($(#[$meta:meta])* $set:ident { $($name:ident),* $(,)? }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum $set {
            $($name,)*
        }

        impl $set {
            pub const ALL: &[$set] = &[$($set::$name,)*];

            pub fn as_str(self) -> &'static str {
                match self {
                    $($set::$name => stringify!($name),)*
                }
            }
        }

        impl std::fmt::Display for $set {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

closed_set! {
/// Why a condition has its status.
Reason {
    // Ready
    Ready,
    Progressing,
    // KeyReady
    KeyUsable,
    KeyNotFound,
    UnsupportedKeyType,
    KeyDisabled,
    KeyNotUsable,
    MissingKeyOperations,
    // TagApplied
    TagPresent,
    // ServicePrincipalReady
    ServicePrincipalGiven,
    ServicePrincipalFound,
    // RoleAssigned
    RoleAssigned,
    // Registered, Paired
    Registered,
    RegistrationMissing,
    PairingHealthy,
    PairingMisconfigured,
    PairingUnreachable,
    ManualRegistrationRequired,
    // Active
    KeyActive,
    Rotating,
    ActivationNotRequested,
    // Deleting
    KeyIsActive,
    // A step that has not run because one it needs has not succeeded yet.
    WaitingKeyReady,
    WaitingTagApplied,
    WaitingServicePrincipalReady,
    WaitingRoleAssigned,
    WaitingRegistered,
    WaitingPaired,
    WaitingActive,
    // Any step
    Suspended,
    InvalidSpec,
    PolicyDenied,
    SecretNotFound,
    SecretUnreadable,
    InvalidCredentials,
    Forbidden,
    Throttled,
    AzureUnreachable,
    AntimatterUnreachable,
    AzureRequestRejected,
    AntimatterRequestRejected,
}}

closed_set! {
/// A change made outside the cluster, told by a `Normal` event.
ChangeReason {
    KeyCreated,
    TagAdded,
    ServicePrincipalCreated,
    RoleAssigned,
    Registered,
    Activated,
    Revoked,
}}

impl Reason {
    /// The reason of a step that waits for `on`.
    pub fn waiting(on: Kind) -> Reason {
        match on {
            Kind::KeyReady => Reason::WaitingKeyReady,
            Kind::TagApplied => Reason::WaitingTagApplied,
            Kind::ServicePrincipalReady => Reason::WaitingServicePrincipalReady,
            Kind::RoleAssigned => Reason::WaitingRoleAssigned,
            Kind::Registered => Reason::WaitingRegistered,
            Kind::Paired => Reason::WaitingPaired,
            Kind::Active => Reason::WaitingActive,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_step_has_its_waiting_reason() {
        for kind in Kind::ALL {
            assert_eq!(Reason::waiting(kind).as_str(), format!("Waiting{}", kind.as_str()));
        }
    }
}
