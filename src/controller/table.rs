//! The steps' names and the one table of which step needs which: read by the gating, the `Ready`
//! summary, the fill after a refused spec and the route without an API key.

closed_set! {
/// The steps, in the order their conditions are listed.
Kind {
    KeyReady,
    TagApplied,
    ServicePrincipalReady,
    RoleAssigned,
    Registered,
    Paired,
    Active,
}}

/// Which side a step acts on, and so when it is required for `Ready`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// Azure only: always required.
    Azure,
    /// Antimatter: needs an API key; without one the person registers by hand.
    Antimatter,
    /// Antimatter's active key: required only with `activate: true`.
    Activation,
}

impl Kind {
    /// The one dependency table: the steps that must be `True` before this one acts, and its route.
    fn row(self) -> (&'static [Kind], Route) {
        match self {
            Kind::KeyReady => (&[], Route::Azure),
            Kind::TagApplied => (&[Kind::KeyReady], Route::Azure),
            Kind::ServicePrincipalReady => (&[Kind::KeyReady], Route::Azure),
            Kind::RoleAssigned => (&[Kind::KeyReady, Kind::ServicePrincipalReady], Route::Azure),
            Kind::Registered => (&[Kind::KeyReady, Kind::TagApplied], Route::Antimatter),
            Kind::Paired => (&[Kind::Registered, Kind::RoleAssigned, Kind::TagApplied], Route::Antimatter),
            Kind::Active => (&[Kind::Paired], Route::Activation),
        }
    }

    pub fn needs(self) -> &'static [Kind] {
        self.row().0
    }

    pub fn route(self) -> Route {
        self.row().1
    }

    /// Whether `Ready` waits for this step.
    pub fn required(self, has_api_key: bool, activate: bool) -> bool {
        match self.route() {
            Route::Azure => true,
            Route::Antimatter => has_api_key,
            Route::Activation => has_api_key && activate,
        }
    }
}
