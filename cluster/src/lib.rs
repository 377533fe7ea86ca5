//! The ZooKeeper schema shared by Nimbus, supervisors and workers (being written).
