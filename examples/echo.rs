//! An echo server on 127.0.0.1:4000 that counts what it echoed per connection and says
//! goodbye when stopped with Ctrl-C.
//!
//! Run: `cargo run --example echo`, then `nc 127.0.0.1 4000`.

use std::net::{IpAddr, Ipv4Addr};

use atoll::telemetry::TracingLogger;
use atoll::{Action, Handler, Server, Socket};

#[derive(Clone, Default)]
struct CountingEcho {
    echoed: u64,
}

impl Handler for CountingEcho {
    async fn handle_data(&mut self, data: &[u8], socket: &mut Socket) -> Action {
        self.echoed += data.len() as u64;
        match socket.send(data).await {
            Ok(()) => Action::Continue,
            Err(e) => Action::Error(e.into()),
        }
    }

    async fn handle_shutdown(&mut self, socket: &mut Socket) -> Action {
        let bye = format!("GOODBYE after {} bytes\n", self.echoed);
        let _ = socket.send(bye.as_bytes()).await;
        Action::Close
    }
}

#[tokio::main]
async fn main() -> atoll::Result<()> {
    tracing_subscriber::fmt().init();
    let server = Server::new(CountingEcho::default())
        .name("echo")
        .ip(IpAddr::V4(Ipv4Addr::LOCALHOST))
        .port(4000)
        .subscribe(TracingLogger::new(tracing::Level::INFO))
        .start()?;
    println!("listening on {}", server.local_addr());
    tokio::signal::ctrl_c().await?;
    let report = server.shutdown().await;
    println!(
        "stopped: {} drained, {} forced",
        report.drained, report.forced
    );
    Ok(())
}
