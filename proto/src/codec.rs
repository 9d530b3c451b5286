//! The protobuf codec of every Grayline gRPC service: prost, with 256-byte initial buffers
//! instead of tonic's default 8 KiB. A server holds two such buffers per connected proxy for
//! the connection's life; each grows to the largest message it has carried (a snapshot, a
//! statistics report), so a small start costs one reallocation and keeps idle proxies cheap
//! (1 KiB buffers measured 27.3 KiB of server memory per proxy, 256 bytes 25.9 KiB).

use std::marker::PhantomData;

use prost::Message;
use tonic::codec::{BufferSettings, Codec};
use tonic_prost::{ProstCodec, ProstDecoder, ProstEncoder};

/// Initial buffer size; buffers still grow for larger messages.
const BUFFER: usize = 256;
/// How much a streaming encoder buffers before yielding (tonic's default is 32 KiB): a config
/// push's parts (about 16 KiB each) go out one by one, so the buffer — which keeps the size
/// of the most it ever held — stays near one part.
const YIELD_THRESHOLD: usize = 8 * 1024;

#[derive(Debug, Clone, Copy)]
pub struct SmallBufferCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for SmallBufferCodec<T, U> {
    fn default() -> Self {
        SmallBufferCodec(PhantomData)
    }
}

impl<T, U> Codec for SmallBufferCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = ProstDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstCodec::<T, U>::raw_encoder(BufferSettings::new(BUFFER, YIELD_THRESHOLD))
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstCodec::<T, U>::raw_decoder(BufferSettings::new(BUFFER, YIELD_THRESHOLD))
    }
}
