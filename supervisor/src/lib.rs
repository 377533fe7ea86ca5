//! Squall supervisor (being written).
