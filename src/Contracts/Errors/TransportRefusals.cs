namespace Serving.Contracts.Errors;

/// <summary>
/// Refusals by the web server itself, which reach the services' exception handlers as Kestrel's
/// <c>BadHttpRequestException</c> (a status and a message) while a handler reads the body: without this mapping each was a
/// 500. The services pass the exception's status; this names its row of <see cref="ErrorCodes"/>.
/// </summary>
public static class TransportRefusals
{
    /// <summary>408 <c>request_timeout</c>, 413 <c>request_too_large</c>, any other status a 400 <c>invalid_json</c> (a body that could not be read).</summary>
    public static RequestRefusedException From(int status, string kestrelMessage) => status switch
    {
        408 => new(ErrorCodes.RequestTimeout,
            "The request body arrived more slowly than the server's minimum data rate and was abandoned; send the body without pausing."),
        413 => new(ErrorCodes.RequestTooLarge, $"The request body is larger than the server accepts ({kestrelMessage}); send a smaller request."),
        _ => new(ErrorCodes.InvalidJson, $"The request body could not be read: {kestrelMessage}"),
    };
}
