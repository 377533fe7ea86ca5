//! Squall nimbus (being written).
