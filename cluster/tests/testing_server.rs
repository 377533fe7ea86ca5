//! The test ZooKeeper server: its errors say what is missing and how to install it.

use squall_cluster::testing::{DEBIAN_CLASSPATH, ZooKeeperServer, ZooKeeperServerError};

#[test]
fn missing_java_says_how_to_fix_it() {
    let error = ZooKeeperServer::start_with("/nonexistent/bin/java", DEBIAN_CLASSPATH).unwrap_err();
    assert!(matches!(error, ZooKeeperServerError::Java { .. }), "{error}");
    assert!(error.to_string().contains("apt-get install zookeeper"), "{error}");
}

#[test]
fn missing_jar_says_how_to_fix_it() {
    let error = ZooKeeperServer::start_with("java", "/nonexistent/zookeeper.jar").unwrap_err();
    assert!(matches!(error, ZooKeeperServerError::Jar { .. }), "{error}");
    assert!(error.to_string().contains("/nonexistent/zookeeper.jar"), "{error}");
    assert!(error.to_string().contains("apt-get install zookeeper"), "{error}");
}

#[test]
fn a_server_that_exits_reports_its_log() {
    // A classpath without ZooKeeper in it: the JVM starts and exits at once.
    let error = ZooKeeperServer::start_with("java", "/usr/share/java/slf4j-simple.jar").unwrap_err();
    let message = error.to_string();
    assert!(matches!(error, ZooKeeperServerError::NotUp { .. }), "{message}");
    assert!(message.contains("QuorumPeerMain"), "the log tail is included: {message}");
}

#[test]
fn stop_and_restart_keep_port_and_data() {
    let mut server = ZooKeeperServer::start().unwrap_or_else(|e| panic!("{e}"));
    let port = server.port();
    assert_eq!(server.connect_string(), format!("127.0.0.1:{port}"));
    server.stop();
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
    server.restart().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(server.port(), port);
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
}
