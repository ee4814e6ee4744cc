//! The memory edges.

use crate::check::Check;

/// The checks of this area.
pub fn checks() -> Vec<Check> {
    vec![]
}
