//! Tenants' weights, shared by the rules that divide something among
//! tenants (the host's sandboxes, the start queue's turns).

use std::collections::HashMap;

/// Each tenant's weight: at least 1, everyone's default, which is not stored.
#[derive(Debug, Default)]
pub(crate) struct Weights(HashMap<String, u32>);

impl Weights {
    /// Sets `tenant`'s weight; 0 and 1 both mean the default.
    pub(crate) fn set(&mut self, tenant: &str, weight: u32) {
        if weight <= 1 {
            self.0.remove(tenant);
        } else {
            self.0.insert(tenant.to_string(), weight);
        }
    }

    /// `tenant`'s weight.
    pub(crate) fn of(&self, tenant: &str) -> u32 {
        self.0.get(tenant).copied().unwrap_or(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_weight_of_one_or_less_is_the_default() {
        let mut w = Weights::default();
        assert_eq!(w.of("a"), 1);
        w.set("a", 3);
        assert_eq!((w.of("a"), w.of("b")), (3, 1));
        w.set("a", 0);
        assert_eq!(w.of("a"), 1);
        assert!(w.0.is_empty());
    }
}
