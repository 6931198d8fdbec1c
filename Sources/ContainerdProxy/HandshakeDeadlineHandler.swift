import NIOCore

/// Closes a connection whose peer has not sent the HTTP/2 client preface in time. gRPC's own idle and
/// keepalive timers only work with a peer that speaks HTTP/2, so a peer that connects and stays silent would
/// otherwise hold its connection (and an fd of the daemon) for ever. Removes itself once the preface is in.
final class HandshakeDeadlineHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    /// "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" (RFC 9113, section 3.4).
    private static let prefaceLength = 24
    private let timeout: TimeAmount
    private var received = 0
    private var deadline: Scheduled<Void>?

    init(timeout: TimeAmount) { self.timeout = timeout }

    func handlerAdded(context: ChannelHandlerContext) {
        let channel = context.channel
        deadline = context.eventLoop.scheduleTask(in: timeout) { channel.close(promise: nil) }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        deadline?.cancel()
        deadline = nil
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        received += unwrapInboundIn(data).readableBytes
        context.fireChannelRead(data)
        if received >= Self.prefaceLength, deadline != nil {
            deadline?.cancel()
            deadline = nil
            context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
        }
    }
}
