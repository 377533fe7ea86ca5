//! The `squall` command (being written).

fn main() {}
