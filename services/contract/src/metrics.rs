//! A minimal Prometheus endpoint for the services that have no HTTP server of their own
//! (processor, sink): every request to the address gets the text `render` returns.
use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::{ContractError, Result};

/// One counter in Prometheus text: HELP, TYPE and the value.
pub fn counter(name: &str, help: &str, value: u64) -> String {
    format!("# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}\n")
}

/// Binds `address` and serves `render()` as Prometheus text until the process ends.
pub async fn serve(
    address: SocketAddr,
    render: impl Fn() -> String + Send + Sync + 'static,
) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .map_err(|e| ContractError::Config(format!("metrics_listen {address}: {e}")))?;
    tracing::info!(%address, "metrics on /metrics");
    let render = std::sync::Arc::new(render);
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let body = render();
            tokio::spawn(async move {
                let mut request = [0u8; 1024];
                let _ = socket.read(&mut request).await;
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(response.as_bytes()).await;
            });
        }
    });
    Ok(())
}
