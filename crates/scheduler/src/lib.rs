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

pub use burst::{BurstLimit, TooFast};
pub use concurrency::{Concurrency, ConcurrencyLimits, Permit, ReserveError, Throttle};
pub use fair::{FairShare, Shed};
pub use placement::{Placed, Placement, WorkerId};
