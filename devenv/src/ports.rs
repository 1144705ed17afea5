//! Free loopback ports for servers started by tests.
//!
//! A port is chosen by binding port 0 on 127.0.0.1 and reading back what the kernel assigned,
//! then releasing it for the server. Another process can take the port in between; the
//! servers of this harness notice that ("address already in use") and start again on fresh
//! ports.

use std::net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket};

use crate::process::HarnessError;

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_tcp_port() -> Result<u16, HarnessError> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .map_err(|e| HarnessError::io("cannot bind a TCP port on 127.0.0.1", e))?;
    port_of(listener.local_addr(), "TCP")
}

/// `count` distinct TCP ports on 127.0.0.1 that were free a moment ago.
pub fn free_tcp_ports(count: usize) -> Result<Vec<u16>, HarnessError> {
    // Hold every listener until all are chosen, so the kernel cannot hand out one port twice.
    let listeners = (0..count)
        .map(|_| {
            TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
                .map_err(|e| HarnessError::io("cannot bind a TCP port on 127.0.0.1", e))
        })
        .collect::<Result<Vec<_>, _>>()?;
    listeners
        .iter()
        .map(|l| port_of(l.local_addr(), "TCP"))
        .collect()
}

/// A UDP port on 127.0.0.1 that was free a moment ago.
pub fn free_udp_port() -> Result<u16, HarnessError> {
    let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
        .map_err(|e| HarnessError::io("cannot bind a UDP port on 127.0.0.1", e))?;
    port_of(socket.local_addr(), "UDP")
}

/// `count` distinct UDP ports on 127.0.0.1 that were free a moment ago.
pub fn free_udp_ports(count: usize) -> Result<Vec<u16>, HarnessError> {
    let sockets = (0..count)
        .map(|_| {
            UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
                .map_err(|e| HarnessError::io("cannot bind a UDP port on 127.0.0.1", e))
        })
        .collect::<Result<Vec<_>, _>>()?;
    sockets
        .iter()
        .map(|s| port_of(s.local_addr(), "UDP"))
        .collect()
}

fn port_of(addr: std::io::Result<SocketAddr>, kind: &str) -> Result<u16, HarnessError> {
    addr.map(|a| a.port())
        .map_err(|e| HarnessError::io(format!("cannot read the bound {kind} port"), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_distinct_and_bindable() {
        let ports = free_tcp_ports(8).unwrap();
        let mut unique = ports.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), 8);
        assert!(ports.iter().all(|&p| p != 0));
        TcpListener::bind((Ipv4Addr::LOCALHOST, ports[0])).unwrap();

        let udp = free_udp_ports(3).unwrap();
        assert_eq!(udp.len(), 3);
        UdpSocket::bind((Ipv4Addr::LOCALHOST, free_udp_port().unwrap())).unwrap();
        assert_ne!(free_tcp_port().unwrap(), 0);
    }
}
