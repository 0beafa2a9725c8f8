//! One module per capability. These modules, the component cache and the
//! future task-store backends are the only code that touches the host's
//! filesystem, process table or network on a guest's behalf; everything
//! else goes through them.
//!
//! Each module wires exactly what the run's [`EffectivePolicy`] allows and
//! refuses everything else with an error naming the rule.
//!
//! [`EffectivePolicy`]: crate::policy::EffectivePolicy

pub mod approval;
pub mod checkpoint;
pub mod digest;
pub mod docker;
pub mod env;
pub mod exec;
pub mod fs;
pub mod limits;
pub mod net;
pub mod output;
pub mod progress;
pub mod readonly;
pub mod sandbox;
