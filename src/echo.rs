//! The `echo` handler: replies with every byte it receives.

use crate::handler::{Action, Handler};
use crate::socket::Socket;

/// Replies with every byte it receives. Holds no state, so an idle echo connection costs only
/// its task and socket.
#[derive(Debug, Clone, Copy, Default)]
pub struct Echo;

impl Handler for Echo {
    async fn handle_data(&mut self, data: &[u8], socket: &mut Socket) -> Action {
        match socket.send(data).await {
            Ok(()) => Action::Continue,
            Err(e) => Action::Error(e.into()),
        }
    }
}
