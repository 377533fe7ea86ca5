//! Example Squall topologies: see the `examples` in this package.
