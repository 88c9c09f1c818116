//! Symbolic linear combinations of plan quantities (states, model outputs, noise draws), so
//! each sampler is written once in ordinary arithmetic and yields its exact coefficients.

use std::collections::BTreeMap;
use std::ops::{Add, Mul, Sub};

use adt_plugin_api::{Src, Term};

/// Σ coef·src.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Lin(pub BTreeMap<Src, f64>);

impl Lin {
    /// One quantity with coefficient 1.
    pub fn of(src: Src) -> Lin {
        Lin(BTreeMap::from([(src, 1.0)]))
    }

    /// Terms with non-zero coefficients, in a fixed order.
    pub fn terms(&self) -> Vec<Term> {
        self.0
            .iter()
            .filter(|(_, c)| **c != 0.0)
            .map(|(s, c)| Term { src: *s, coef: *c })
            .collect()
    }

    /// Coefficient of one quantity.
    pub fn coef(&self, src: Src) -> f64 {
        self.0.get(&src).copied().unwrap_or(0.0)
    }
}

impl Add for Lin {
    type Output = Lin;
    fn add(mut self, rhs: Lin) -> Lin {
        for (s, c) in rhs.0 {
            *self.0.entry(s).or_insert(0.0) += c;
        }
        self
    }
}

impl Sub for Lin {
    type Output = Lin;
    fn sub(self, rhs: Lin) -> Lin {
        self + rhs * -1.0
    }
}

impl Mul<f64> for Lin {
    type Output = Lin;
    fn mul(mut self, k: f64) -> Lin {
        for c in self.0.values_mut() {
            *c *= k;
        }
        self
    }
}

impl Mul<Lin> for f64 {
    type Output = Lin;
    fn mul(self, rhs: Lin) -> Lin {
        rhs * self
    }
}
