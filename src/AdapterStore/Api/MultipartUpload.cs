using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.Features;
using Microsoft.AspNetCore.WebUtilities;
using Microsoft.Net.Http.Headers;
using Serving.AdapterStore.Ingest;
using Serving.AdapterStore.Peft;

namespace Serving.AdapterStore.Api;

/// <summary>One file part of a multipart upload.</summary>
/// <param name="Field">The form field name.</param>
/// <param name="FileName">The file name without any folder.</param>
/// <param name="Data">The content.</param>
public sealed record UploadedFile(string Field, string FileName, byte[] Data)
{
    /// <summary>True for the pickle formats refused everywhere (arbitrary code on load).</summary>
    public bool IsPickle => FileName.EndsWith(".bin", StringComparison.OrdinalIgnoreCase) || FileName.EndsWith(".pt", StringComparison.OrdinalIgnoreCase)
        || FileName.EndsWith(".pth", StringComparison.OrdinalIgnoreCase) || FileName.EndsWith(".ckpt", StringComparison.OrdinalIgnoreCase);
}

/// <summary>
/// Reads a <c>multipart/form-data</c> upload (adapters, reward heads) while counting bytes against a limit: 413
/// <c>payload_too_large</c> past it (declared or streamed), 400 <c>upload_invalid</c> for a body that is not a usable
/// multipart form. Parts with a file name are files, the others form fields.
/// </summary>
public static class MultipartUpload
{
    /// <summary>The files and fields of the body; <paramref name="expected"/> says what to send when it is not multipart.</summary>
    public static async Task<(List<UploadedFile> Files, Dictionary<string, string> Fields)> ReadAsync(
        HttpRequest request, long maxBytes, string expected, CancellationToken cancellationToken)
    {
        if (request.ContentLength is long declared && declared > maxBytes) throw PeftArchive.TooLarge(maxBytes);
        if (request.HttpContext.Features.Get<IHttpMaxRequestBodySizeFeature>() is { IsReadOnly: false } limit) limit.MaxRequestBodySize = maxBytes + (64 << 10);
        if (!MediaTypeHeaderValue.TryParse(request.ContentType, out var mediaType) || !mediaType.MediaType.Equals("multipart/form-data", StringComparison.OrdinalIgnoreCase))
            throw new AdapterValidationException(AdapterErrors.UploadInvalid, $"Send multipart/form-data with {expected}.", status: 400);
        string boundary = HeaderUtilities.RemoveQuotes(mediaType.Boundary).Value ?? "";
        if (boundary.Length == 0) throw new AdapterValidationException(AdapterErrors.UploadInvalid, "multipart/form-data without a boundary.", status: 400);

        var reader = new MultipartReader(boundary, request.Body) { BodyLengthLimit = null };
        var fields = new Dictionary<string, string>(StringComparer.Ordinal);
        var files = new List<UploadedFile>();
        long total = 0;
        try
        {
            while (await reader.ReadNextSectionAsync(cancellationToken) is { } section)
            {
                if (!ContentDispositionHeaderValue.TryParse(section.ContentDisposition, out var cd)) continue;
                string field = HeaderUtilities.RemoveQuotes(cd.Name).Value ?? "";
                string? fileName = HeaderUtilities.RemoveQuotes(cd.FileNameStar.HasValue ? cd.FileNameStar : cd.FileName).Value;
                var data = await ReadLimitedAsync(section.Body, maxBytes - total, maxBytes, cancellationToken);
                total += data.Length;
                if (string.IsNullOrEmpty(fileName)) fields[field] = System.Text.Encoding.UTF8.GetString(data);
                else files.Add(new UploadedFile(field, Path.GetFileName(fileName.Replace('\\', '/')), data));
            }
        }
        catch (BadHttpRequestException e) when (e.StatusCode == StatusCodes.Status413PayloadTooLarge)
        {
            throw PeftArchive.TooLarge(maxBytes);
        }
        catch (IOException e) when (e is not EndOfStreamException)
        {
            throw new AdapterValidationException(AdapterErrors.UploadInvalid, $"The multipart body cannot be read: {e.Message}", status: 400);
        }
        catch (InvalidDataException e)
        {
            throw new AdapterValidationException(AdapterErrors.UploadInvalid, $"The multipart body is malformed: {e.Message}", status: 400);
        }
        return (files, fields);
    }

    private static async Task<byte[]> ReadLimitedAsync(Stream s, long remaining, long max, CancellationToken cancellationToken)
    {
        using var ms = new MemoryStream();
        var buffer = new byte[81920];
        int read;
        while ((read = await s.ReadAsync(buffer, cancellationToken)) > 0)
        {
            if (ms.Length + read > remaining) throw PeftArchive.TooLarge(max);
            ms.Write(buffer, 0, read);
        }
        return ms.ToArray();
    }
}
