//! HSM v2 component state (`hsm.yaml`: `GET /State/Components`).

use serde::Deserialize;

use super::http::Endpoint;
use csm_wire::HsmComponent;

use super::error::CsmError;

/// Query parameters of `GET /State/Components`. Values of one parameter are ORed, different
/// parameters ANDed (as `hsm.yaml` describes); an empty filter returns every component.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ComponentFilter {
    pub ids: Vec<String>,
    pub types: Vec<String>,
    pub states: Vec<String>,
    pub roles: Vec<String>,
    pub subroles: Vec<String>,
    pub enabled: Option<bool>,
}

impl ComponentFilter {
    /// Components of type `Node`.
    pub fn nodes() -> Self {
        Self::default().with_type("Node")
    }

    pub fn with_id(mut self, xname: impl Into<String>) -> Self {
        self.ids.push(xname.into());
        self
    }

    pub fn with_type(mut self, kind: impl Into<String>) -> Self {
        self.types.push(kind.into());
        self
    }

    pub fn with_state(mut self, state: impl Into<String>) -> Self {
        self.states.push(state.into());
        self
    }

    pub fn with_role(mut self, role: impl Into<String>) -> Self {
        self.roles.push(role.into());
        self
    }

    pub fn with_subrole(mut self, subrole: impl Into<String>) -> Self {
        self.subroles.push(subrole.into());
        self
    }

    pub fn with_enabled(mut self, enabled: bool) -> Self {
        self.enabled = Some(enabled);
        self
    }

    /// Parameter names as in `hsm.yaml` (`id`, `type`, `state`, `role`, `subrole`, `enabled`),
    /// repeated once per value.
    fn query(&self) -> Vec<(&'static str, String)> {
        let repeated = |name: &'static str, values: &[String]| {
            values
                .iter()
                .map(move |v| (name, v.clone()))
                .collect::<Vec<_>>()
        };
        let mut query = Vec::new();
        query.extend(repeated("id", &self.ids));
        query.extend(repeated("type", &self.types));
        query.extend(repeated("state", &self.states));
        query.extend(repeated("role", &self.roles));
        query.extend(repeated("subrole", &self.subroles));
        if let Some(enabled) = self.enabled {
            query.push(("enabled", enabled.to_string()));
        }
        query
    }
}

/// `ComponentArray_ComponentArray`.
#[derive(Deserialize)]
struct ComponentArray {
    #[serde(rename = "Components", default)]
    components: Option<Vec<HsmComponent>>,
}

#[derive(Clone, Debug)]
pub struct HsmClient {
    endpoint: Endpoint,
}

impl HsmClient {
    pub(crate) fn new(endpoint: Endpoint) -> Self {
        Self { endpoint }
    }

    /// `GET /State/Components` with `filter`.
    pub async fn list_components(
        &self,
        filter: &ComponentFilter,
    ) -> Result<Vec<HsmComponent>, CsmError> {
        let array: ComponentArray = self
            .endpoint
            .get_json(&["State", "Components"], &filter.query())
            .await?;
        Ok(array.components.unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_repeats_parameters_per_value() {
        let filter = ComponentFilter::nodes()
            .with_role("Compute")
            .with_role("Management")
            .with_state("Ready")
            .with_enabled(true);
        assert_eq!(
            filter.query(),
            vec![
                ("type", "Node".to_owned()),
                ("state", "Ready".to_owned()),
                ("role", "Compute".to_owned()),
                ("role", "Management".to_owned()),
                ("enabled", "true".to_owned()),
            ]
        );
    }
}
