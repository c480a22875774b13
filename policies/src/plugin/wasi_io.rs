//! `wasi:io` for plugins called on the request's stack ([`CallStack::Caller`]): the same
//! functions as wasmtime-wasi's, each run to its end at once instead of awaited.
//!
//! wasmtime-wasi defines `wasi:io`'s waiting functions (`poll`, `block`, the `blocking-*`
//! stream methods, a stream's drop) as async host functions, and a component that imports
//! one must be called on a fiber, which costs every call a stack switch there and back (about
//! 900 instructions of the ~7,000 a no-op plugin adds to a request). Nothing a plugin can reach
//! through `wasi:io` ever waits on this gateway: its standard input is empty and its output
//! streams discard what they get, so each of their futures is ready when first polled. Here
//! each one is polled once; one that is not ready (which [`CallStack::of`] rules out: only
//! files, sockets and timers wait, and a component that imports them is called on a fiber)
//! traps the call with a message that says so, rather than blocking the gateway's thread.
//!
//! [`CallStack::Caller`]: super::CallStack::Caller
//! [`CallStack::of`]: super::CallStack::of

use std::pin::pin;
use std::task::{Context, Poll, Waker};

use wasmtime::component::{HasData, Linker, Resource, ResourceTable};
use wasmtime_wasi::p2::bindings::io::poll as async_poll;
use wasmtime_wasi::p2::bindings::io::streams::{
    self as async_streams, HostInputStream as AsyncInput, HostOutputStream as AsyncOutput,
};
use wasmtime_wasi::p2::bindings::sync::io::{poll, streams};
use wasmtime_wasi::p2::{DynInputStream as InputStream, DynOutputStream as OutputStream};
use wasmtime_wasi::p2::{DynPollable, StreamError, StreamResult};

use super::host::HostState;

/// Links `wasi:io/poll` and `wasi:io/streams` run at once, in place of the async ones.
pub(super) fn shadow_in(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    poll::add_to_linker::<HostState, AtOnceIo>(linker, |state| AtOnce(&mut state.table))?;
    streams::add_to_linker::<HostState, AtOnceIo>(linker, |state| AtOnce(&mut state.table))?;
    linker.allow_shadowing(false);
    Ok(())
}

/// The store's resource table, serving `wasi:io` at once.
pub(super) struct AtOnce<'a>(&'a mut ResourceTable);

struct AtOnceIo;

impl HasData for AtOnceIo {
    type Data<'a> = AtOnce<'a>;
}

/// The trap of a `wasi:io` function that would have waited.
const WOULD_WAIT: &str = "a wasi:io function would have waited, which a plugin called on the \
                          request's stack cannot do (only files, sockets and timers wait, and a \
                          plugin that imports them is called on a fiber)";

/// Runs `future` to its end if it is ready when first polled.
fn at_once<T>(future: impl Future<Output = T>) -> Result<T, wasmtime::Error> {
    let mut future = pin!(future);
    match future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(value) => Ok(value),
        Poll::Pending => Err(wasmtime::Error::msg(WOULD_WAIT)),
    }
}

/// [`at_once`] for a stream operation: not ready traps.
fn stream_at_once<T>(future: impl Future<Output = StreamResult<T>>) -> StreamResult<T> {
    at_once(future).map_err(StreamError::Trap)?
}

impl poll::Host for AtOnce<'_> {
    fn poll(&mut self, pollables: Vec<Resource<DynPollable>>) -> wasmtime::Result<Vec<u32>> {
        at_once(async_poll::Host::poll(self.0, pollables))?
    }
}

impl poll::HostPollable for AtOnce<'_> {
    fn ready(&mut self, pollable: Resource<DynPollable>) -> wasmtime::Result<bool> {
        at_once(async_poll::HostPollable::ready(self.0, pollable))?
    }

    fn block(&mut self, pollable: Resource<DynPollable>) -> wasmtime::Result<()> {
        at_once(async_poll::HostPollable::block(self.0, pollable))?
    }

    fn drop(&mut self, pollable: Resource<DynPollable>) -> wasmtime::Result<()> {
        async_poll::HostPollable::drop(self.0, pollable)
    }
}

impl streams::Host for AtOnce<'_> {
    fn convert_stream_error(&mut self, err: StreamError) -> wasmtime::Result<streams::StreamError> {
        Ok(
            match async_streams::Host::convert_stream_error(self.0, err)? {
                async_streams::StreamError::LastOperationFailed(e) => {
                    streams::StreamError::LastOperationFailed(e)
                }
                async_streams::StreamError::Closed => streams::StreamError::Closed,
            },
        )
    }
}

impl streams::HostOutputStream for AtOnce<'_> {
    fn drop(&mut self, stream: Resource<OutputStream>) -> wasmtime::Result<()> {
        at_once(AsyncOutput::drop(self.0, stream))?
    }

    fn check_write(&mut self, stream: Resource<OutputStream>) -> StreamResult<u64> {
        AsyncOutput::check_write(self.0, stream)
    }

    fn write(&mut self, stream: Resource<OutputStream>, bytes: Vec<u8>) -> StreamResult<()> {
        AsyncOutput::write(self.0, stream, bytes)
    }

    fn blocking_write_and_flush(
        &mut self,
        stream: Resource<OutputStream>,
        bytes: Vec<u8>,
    ) -> StreamResult<()> {
        stream_at_once(AsyncOutput::blocking_write_and_flush(self.0, stream, bytes))
    }

    fn blocking_write_zeroes_and_flush(
        &mut self,
        stream: Resource<OutputStream>,
        len: u64,
    ) -> StreamResult<()> {
        stream_at_once(AsyncOutput::blocking_write_zeroes_and_flush(
            self.0, stream, len,
        ))
    }

    fn subscribe(
        &mut self,
        stream: Resource<OutputStream>,
    ) -> wasmtime::Result<Resource<DynPollable>> {
        AsyncOutput::subscribe(self.0, stream)
    }

    fn write_zeroes(&mut self, stream: Resource<OutputStream>, len: u64) -> StreamResult<()> {
        AsyncOutput::write_zeroes(self.0, stream, len)
    }

    fn flush(&mut self, stream: Resource<OutputStream>) -> StreamResult<()> {
        AsyncOutput::flush(self.0, stream)
    }

    fn blocking_flush(&mut self, stream: Resource<OutputStream>) -> StreamResult<()> {
        stream_at_once(AsyncOutput::blocking_flush(self.0, stream))
    }

    fn splice(
        &mut self,
        dst: Resource<OutputStream>,
        src: Resource<InputStream>,
        len: u64,
    ) -> StreamResult<u64> {
        AsyncOutput::splice(self.0, dst, src, len)
    }

    fn blocking_splice(
        &mut self,
        dst: Resource<OutputStream>,
        src: Resource<InputStream>,
        len: u64,
    ) -> StreamResult<u64> {
        stream_at_once(AsyncOutput::blocking_splice(self.0, dst, src, len))
    }
}

impl streams::HostInputStream for AtOnce<'_> {
    fn drop(&mut self, stream: Resource<InputStream>) -> wasmtime::Result<()> {
        at_once(AsyncInput::drop(self.0, stream))?
    }

    fn read(&mut self, stream: Resource<InputStream>, len: u64) -> StreamResult<Vec<u8>> {
        AsyncInput::read(self.0, stream, len)
    }

    fn blocking_read(&mut self, stream: Resource<InputStream>, len: u64) -> StreamResult<Vec<u8>> {
        stream_at_once(AsyncInput::blocking_read(self.0, stream, len))
    }

    fn skip(&mut self, stream: Resource<InputStream>, len: u64) -> StreamResult<u64> {
        AsyncInput::skip(self.0, stream, len)
    }

    fn blocking_skip(&mut self, stream: Resource<InputStream>, len: u64) -> StreamResult<u64> {
        stream_at_once(AsyncInput::blocking_skip(self.0, stream, len))
    }

    fn subscribe(
        &mut self,
        stream: Resource<InputStream>,
    ) -> wasmtime::Result<Resource<DynPollable>> {
        AsyncInput::subscribe(self.0, stream)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ready_future_gives_its_value_and_one_that_would_wait_traps() {
        assert_eq!(at_once(async { 7 }).unwrap(), 7);
        let waited = at_once(std::future::pending::<()>()).unwrap_err();
        assert!(waited.to_string().contains("would have waited"), "{waited}");
        let stream = stream_at_once(std::future::pending::<StreamResult<()>>()).unwrap_err();
        assert!(matches!(stream, StreamError::Trap(_)), "{stream:?}");
    }
}
