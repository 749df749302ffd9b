//! Byte and packet counters of one connection.

/// What a connection has moved so far. A "packet" is one successful read or one send call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SocketStats {
    /// Bytes received.
    pub recv_bytes: u64,
    /// Reads that returned data.
    pub recv_packets: u64,
    /// Bytes sent.
    pub send_bytes: u64,
    /// Send and sendfile calls that completed.
    pub send_packets: u64,
}
