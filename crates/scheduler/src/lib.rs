//! The scheduler: which invocations may run, and where.
//!
//! Today it holds admission by concurrency, as Lambda has it
//! ([`concurrency`]): an account limit per tenant, reserved concurrency per
//! function, and the throttling reasons a caller is told; and the fair
//! sharing of a host's instance slots among tenants ([`fair`]); and
//! placement on workers ([`placement`]). Pre-warming comes here too; the instance pools they steer live with
//! the executors (`nimbus-worker`).

#![deny(missing_docs)]

pub mod burst;
pub mod concurrency;
pub mod fair;
pub mod placement;
pub mod prewarm;
pub mod queue;
mod weights;

pub use burst::{BurstLimit, TooFast};
pub use concurrency::{Concurrency, ConcurrencyLimits, Permit, ReserveError, Throttle};
pub use fair::{FairShare, Shed};
pub use placement::{Placed, Placement, WorkerId};
pub use queue::{StartGate, StartPermit};

/// What the scheduler's replays in injected time share.
#[cfg(test)]
mod replay {
    /// xorshift64*: a fixed sequence for a fixed seed.
    pub struct Rng(pub u64);

    impl Rng {
        pub fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        /// Uniform in [0, 1).
        pub fn uniform(&mut self) -> f64 {
            (self.next() >> 11) as f64 / (1u64 << 53) as f64
        }
    }
}
