//! The `echo` handler: replies with every byte it receives.

use crate::handler::{Action, Handler, Move};
use crate::socket::Socket;

/// Replies with every byte it receives. Holds no state, so an idle echo connection costs only
/// its task and socket, and a connection moves to the new process at an upgrade as soon as it
/// is between two reads, carrying nothing: its client never sees it close.
#[derive(Debug, Clone, Copy, Default)]
pub struct Echo;

impl Handler for Echo {
    async fn handle_data(&mut self, data: &[u8], socket: &mut Socket) -> Action {
        match socket.send(data).await {
            Ok(()) => Action::Continue,
            Err(e) => Action::Error(e.into()),
        }
    }

    /// Every byte read has been echoed by now: nothing to carry (the default
    /// [`restore`](Handler::restore) then starts afresh from the listener's `Echo`).
    async fn handle_move(&mut self, _socket: &mut Socket) -> Move {
        Move::Now(Vec::new())
    }
}
