//! Every reason a condition can carry and every reason of a `Normal` event: closed sets, so
//! docs/reference.md is checked against them (`tests/docs.rs`) and status readers can rely on them.

use super::table::Kind;

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
    KeyClaimed,
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
    PropagationPending,
    PairingMisconfigured,
    PairingUnreachable,
    ManualRegistrationRequired,
    // Active
    KeyActive,
    RotationInProgress,
    ActivationNotRequested,
    ActiveKeyChanged,
    ActivationConflict,
    // Deleting (a `Revoke` that waits or is refused)
    KeyIsActive,
    RotationIncomplete,
    KeyStillRegistered,
    // Warning events of a deletion that left access in place
    AccessLeftInPlace,
    RevokeNeedsApiKey,
    NamespaceDeleting,
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
    UntrustedCell,
}}

closed_set! {
/// A change made outside the cluster, told by a `Normal` event.
ChangeReason {
    KeyCreated,
    TagAdded,
    OwnerMarked,
    ServicePrincipalCreated,
    RoleAssigned,
    Registered,
    RotationPolicySet,
    Activated,
    RotationCompleted,
    Retired,
    Revoked,
    Changed,
}}

impl Reason {
    /// Reasons retrying alone cannot fix: they need a change to the object, its Secrets or the
    /// permissions. `Stalled` (kstatus) and the Argo CD health check's `Degraded` follow this set.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Reason::InvalidSpec
                | Reason::PolicyDenied
                | Reason::KeyClaimed
                | Reason::KeyNotFound
                | Reason::UnsupportedKeyType
                | Reason::KeyDisabled
                | Reason::KeyNotUsable
                | Reason::MissingKeyOperations
                | Reason::Forbidden
                | Reason::InvalidCredentials
                | Reason::PairingMisconfigured
                | Reason::ActiveKeyChanged
                | Reason::ActivationConflict
        )
    }

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

impl Reason {
    /// (condition status, condition type, what it means and the fix): the troubleshooting table of
    /// docs/reference.md is generated from this (`make generate`).
    pub fn doc(self) -> (&'static str, &'static str, &'static str) {
        match self {
            Reason::Ready => ("True", "Ready", "everything required passed"),
            Reason::Progressing => ("Unknown", "Ready", "a required step is still waiting; see its condition"),
            Reason::KeyUsable => (
                "True",
                "KeyReady",
                "the key is an enabled `oct-HSM` key allowing wrapKey and unwrapKey (a creation is told by the `KeyCreated` event)",
            ),
            Reason::KeyNotFound => (
                "False",
                "KeyReady",
                "no such key and `create: Never` (or suspended): create the key or set `create: IfMissing`",
            ),
            Reason::UnsupportedKeyType => (
                "False",
                "KeyReady",
                "not `oct-HSM` (e.g. RSA): use another key name; the operator never replaces keys",
            ),
            Reason::KeyDisabled => (
                "False",
                "KeyReady",
                "enable the key (`az keyvault key set-attributes --hsm-name … --name … --enabled true`)",
            ),
            Reason::KeyNotUsable => (
                "False",
                "KeyReady",
                "the key expired or is not yet valid (`exp`/`nbf`): fix its attributes or use another key",
            ),
            Reason::MissingKeyOperations => (
                "False",
                "KeyReady",
                "the key does not allow wrapKey/unwrapKey: update its `key_ops` or use another key",
            ),
            Reason::KeyClaimed => (
                "False",
                "KeyReady",
                "another AzureRootKey owns the key (its owner marker, tag `antimatter-rootkey-owner`, names it; the message says which): nothing is changed until that object is deleted; a key marked by another cluster is taken only with `spec.key.adopt: true`",
            ),
            Reason::TagPresent => (
                "True",
                "TagApplied",
                "the key version carries `<domainId>=allow` (added by read-merge-write, other tags kept)",
            ),
            Reason::ServicePrincipalGiven => (
                "True",
                "ServicePrincipalReady",
                "the principal given in `spec.antimatter.servicePrincipalObjectId`, once Graph confirmed it is Antimatter's application's (one read, no create), or unverified where the tenancy policy allows it (`unverifiedPrincipals`)",
            ),
            Reason::ServicePrincipalFound => (
                "True",
                "ServicePrincipalReady",
                "the principal of Antimatter's application in your tenant, found or created through Graph (a creation is told by the `ServicePrincipalCreated` event)",
            ),
            Reason::RoleAssigned => (
                "True",
                "RoleAssigned",
                "the principal holds \"Managed HSM Crypto User\" at `/keys/<name>` (exactly one assignment; when the HSM answers `MatchingRoleAssignmentExists`, the one made by hand is found and adopted)",
            ),
            Reason::Registered => ("True", "Registered", "the versioned key URL is registered with Antimatter"),
            Reason::RegistrationMissing => {
                ("False", "Paired", "Antimatter no longer knows the recorded root key; the operator registers it again")
            }
            Reason::PairingHealthy => ("True", "Paired", "Antimatter wrapped and unwrapped with the key"),
            Reason::PropagationPending => (
                "Unknown",
                "Paired",
                "the pairing check answered MISCONFIGURED within 10 minutes of the operator's own grant (role assignment or service principal): Managed HSM RBAC and Entra ID take time to propagate, so the operator checks again every few seconds; after 10 minutes it is `PairingMisconfigured`",
            ),
            Reason::PairingMisconfigured => (
                "False",
                "Paired",
                "reachable but unusable: the message says what (tag, role, type, disabled); the operator repairs tag and role drift itself",
            ),
            Reason::PairingUnreachable => {
                ("False", "Paired", "Antimatter could not reach the key (network, HSM firewall, HSM down)")
            }
            Reason::ManualRegistrationRequired => (
                "Unknown",
                "Registered, Paired, Active",
                "no API key: paste the key URL and tenant from the message into the dashboard, or set `apiKeySecretRef`",
            ),
            Reason::KeyActive => ("True", "Active", "the key is the domain's active root encryption key"),
            Reason::RotationInProgress => (
                "Unknown",
                "Active",
                "active; Antimatter is still re-wrapping data keys under it (the operator keeps calling `rotate`, at most 20 batches per reconcile, progress in `status.rotation`); `Ready` waits for it",
            ),
            Reason::ActivationNotRequested => ("False", "Active", "`activate: false` (not required for Ready)"),
            Reason::ActiveKeyChanged => (
                "False",
                "Active",
                "someone else made another key the domain's active key after this object activated its own; the operator leaves it (set `reclaimActive: true` to take it back, or `activate: false` to accept it)",
            ),
            Reason::ActivationConflict => (
                "False",
                "Active",
                "another AzureRootKey (named in the message, the oldest) already asks to activate a key in this domain; only one may",
            ),
            Reason::Suspended => (
                "False/Unknown",
                "any",
                "`suspend: true` and a change would be needed: unsuspend to let the operator act",
            ),
            Reason::InvalidSpec => (
                "False",
                "first failing step",
                "the spec cannot be acted on (HSM URL outside the cloud's HSM domains, no application ID, a Secret value that is empty or not text) — the message says which",
            ),
            Reason::PolicyDenied => (
                "False",
                "KeyReady or ServicePrincipalReady",
                "refused before any remote call or Secret read by what the cluster admin decided: an `apiUrl` outside the operator's Antimatter allowlist, the tenancy policy (HSM, key name, tenant, domain, manual route, claiming existing keys), no trusted source for Antimatter's application ID; or, on `ServicePrincipalReady`, a spec `applicationId` or `servicePrincipalObjectId` that is not Antimatter's — the message says which",
            ),
            Reason::SecretNotFound => {
                ("False", "KeyReady", "a referenced Secret or key in it does not exist in the object's namespace")
            }
            Reason::SecretUnreadable => {
                ("False", "KeyReady", "the operator may not read the Secret (RBAC) or the API server failed")
            }
            Reason::InvalidCredentials => (
                "False",
                "the failing step",
                "Entra ID refused the client ID/secret or the federated assertion (its 400/401 with an AADSTS code, e.g. AADSTS7000215 wrong secret, AADSTS700211/700213 no federated credential for the token's issuer/subject, AADSTS7000272/700027 a token not signed by its issuer's published key), or Antimatter refused the API key: fix the Secret or the operator's identity. Throttling and outages of the token endpoint are `Throttled` and `AzureUnreachable`, never this",
            ),
            Reason::Forbidden => (
                "False",
                "the failing step",
                "the identity lacks a permission; the message names it (Crypto User at `/keys` for keys, Policy Administrator for role assignments, Graph `Application.ReadWrite.OwnedBy`/`All` — or set `servicePrincipalObjectId`)",
            ),
            Reason::Throttled => (
                "False",
                "the failing step",
                "Azure (Entra ID's token endpoint too) or Antimatter answered 429; retried after `Retry-After`. After a throttled token request, no token request of that identity goes out until its `Retry-After` is over",
            ),
            Reason::AzureUnreachable => (
                "False",
                "the failing step",
                "Entra ID (its token endpoint included), Graph or the HSM could not be reached, answered 5xx or timed out, or sent an unreadable response; retried with backoff",
            ),
            Reason::AntimatterUnreachable => (
                "False",
                "the failing step",
                "the Antimatter API could not be reached, answered 5xx or timed out, sent an unreadable response, or answered `308` to a call again right after the operator logged in to follow the domain to its new cell; retried with backoff",
            ),
            Reason::AzureRequestRejected => (
                "False",
                "the failing step",
                "Azure answered another 4xx; the message carries the service's code and message",
            ),
            Reason::AntimatterRequestRejected => (
                "False",
                "the failing step",
                "Antimatter answered another 4xx; the message carries its field and message",
            ),
            Reason::UntrustedCell => (
                "False",
                "the failing step",
                "Antimatter's authenticate named a cell (`cellAddress`) outside the allowlisted API's domain (https, the API's port, the API host or a host under its parent domain): no token is sent there; retried with backoff. Ask Antimatter which API URL serves the domain",
            ),
            Reason::KeyIsActive => (
                "False",
                "Deleting",
                "`Revoke` refused: the key (some version of it) is Antimatter's active key. Activate another key, or set `deletionPolicy: Retain` to release the object",
            ),
            Reason::RotationIncomplete => (
                "Unknown",
                "Deleting",
                "`Revoke` waits: Antimatter is still re-wrapping data keys (`rotate` answers `has_more`), some perhaps still under this key; the operator keeps calling `rotate` and removes access once it is done",
            ),
            Reason::KeyStillRegistered => (
                "False",
                "Deleting",
                "`Revoke` refused: Antimatter still has the key registered, not by this object (by hand or by another object); delete that registration in Antimatter, or set `deletionPolicy: Retain`",
            ),
            Reason::AccessLeftInPlace => (
                "Warning event",
                "deletion",
                "`Revoke` released the object but left access in place that it did not add (or cannot prove it added: objects from before `status.created`), or that another domain on the key still needs; the event lists each",
            ),
            Reason::RevokeNeedsApiKey => (
                "Warning event",
                "deletion",
                "a `Revoke` object without `apiKeySecretRef` (made before admission required one) was released as `Retain`: without the Antimatter API the operator cannot tell whether Antimatter uses the key; the event lists what was left",
            ),
            Reason::NamespaceDeleting => (
                "Warning event",
                "deletion",
                "the object's namespace is being deleted (its Secrets may be gone), so it was released as `Retain` and namespace deletion does not wait; the operator's log lists what was left (the namespace may refuse the event)",
            ),
            Reason::WaitingKeyReady
            | Reason::WaitingTagApplied
            | Reason::WaitingServicePrincipalReady
            | Reason::WaitingRoleAssigned
            | Reason::WaitingRegistered
            | Reason::WaitingPaired
            | Reason::WaitingActive => {
                ("Unknown", "any", "an earlier step has not succeeded yet; see the step the reason names")
            }
        }
    }
}

impl ChangeReason {
    /// What the change was, for the events table of docs/reference.md.
    pub fn doc(self) -> &'static str {
        match self {
            ChangeReason::KeyCreated => "the operator created the `oct-HSM` key",
            ChangeReason::TagAdded => "the operator added `<domainId>=allow` to a key version",
            ChangeReason::OwnerMarked => {
                "the operator marked the key as this object's (tag `antimatter-rootkey-owner=<cluster-id>/<namespace>/<name>`)"
            }
            ChangeReason::ServicePrincipalCreated => {
                "the operator created Antimatter's service principal through Graph"
            }
            ChangeReason::RoleAssigned => "the operator assigned \"Managed HSM Crypto User\" at the key",
            ChangeReason::Registered => "the operator registered the key URL with Antimatter",
            ChangeReason::RotationPolicySet => {
                "the operator set the key's rotation policy in the HSM to `spec.key.rotationPolicy`"
            }
            ChangeReason::Activated => "the operator made the key (a new version of it) active",
            ChangeReason::RotationCompleted => {
                "Antimatter finished re-wrapping the domain's data keys under the key the operator activated"
            }
            ChangeReason::Retired => {
                "the operator deleted its Antimatter registration of an older key version (not active, nothing wrapped under it); the HSM key version is kept"
            }
            ChangeReason::Revoked => "`Revoke` deletion removed what this object had added (listed); the key is kept",
            ChangeReason::Changed => {
                "several of the above in one reconcile, in one event: its note lists each as `Reason: what changed`"
            }
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
