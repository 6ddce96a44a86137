using System.Globalization;
using System.Text;

namespace Serving.Inference.Chat.Jinja;

/// <summary>What a token is.</summary>
internal enum TokenKind { Text, VariableBegin, VariableEnd, BlockBegin, BlockEnd, Name, String, Integer, Float, Operator, End }

/// <summary>One token with the template line it starts on (1-based).</summary>
internal readonly record struct Token(TokenKind Kind, string Value, int Line);

/// <summary>
/// Splits a template into tokens as Jinja's lexer does in the configuration transformers uses: text between tags, and
/// the tokens inside <c>{{ }}</c> and <c>{% %}</c> (comments dropped, <c>{% raw %}</c> kept verbatim). Whitespace:
/// <c>-</c> next to a delimiter strips all whitespace on that side; <c>trim_blocks</c> drops the first newline after a
/// block or comment tag; <c>lstrip_blocks</c> drops spaces and tabs from the start of a line up to a block or comment
/// tag (not for <c>{%+</c>); <c>+%}</c> keeps the newline. A delimiter inside brackets or a string does not close a
/// tag. Malformed input is a <see cref="TemplateSyntaxException"/> naming the line.
/// </summary>
internal sealed class JinjaLexer
{
    private readonly string _src;
    private readonly List<Token> _tokens = [];
    private int _pos;
    private int _line = 1;
    private bool _stripNextLeading;
    private bool _trimNextNewline;
    private bool _lineStarting = true;

    private JinjaLexer(string src) => _src = src.Replace("\r\n", "\n", StringComparison.Ordinal);

    public static List<Token> Tokenize(string source)
    {
        var lexer = new JinjaLexer(source);
        lexer.Run();
        return lexer._tokens;
    }

    private void Run()
    {
        while (_pos < _src.Length)
        {
            var open = IndexOfOpen(_pos);
            var textEnd = open < 0 ? _src.Length : open;
            var text = _src[_pos..textEnd];
            if (_stripNextLeading) text = text.TrimStart();
            else if (_trimNextNewline && text.StartsWith('\n')) text = text[1..];
            _stripNextLeading = false;
            _trimNextNewline = false;
            if (open < 0)
            {
                AddText(text);
                _pos = _src.Length;
                break;
            }
            var kind = _src[open + 1];
            var marker = open + 2 < _src.Length ? _src[open + 2] : '\0';
            if (marker == '-')
            {
                text = text.TrimEnd();
            }
            else if (kind is '%' or '#' && marker != '+')
            {
                var lineStart = text.LastIndexOf('\n') + 1;
                if ((lineStart > 0 || _lineStarting) && text.AsSpan(lineStart).IndexOfAnyExcept(' ', '\t') < 0) text = text[..lineStart];
            }
            AddText(text);
            _line += Count(_src, _pos, open);
            _pos = open + 2 + (marker is '-' or '+' ? 1 : 0);
            switch (kind)
            {
                case '#':
                    SkipComment(open);
                    break;
                case '{':
                    _tokens.Add(new Token(TokenKind.VariableBegin, "{{", _line));
                    LexTag("}}", TokenKind.VariableEnd);
                    break;
                default:
                    if (IsRawStart()) LexRaw();
                    else
                    {
                        _tokens.Add(new Token(TokenKind.BlockBegin, "{%", _line));
                        LexTag("%}", TokenKind.BlockEnd);
                    }
                    break;
            }
        }
        _tokens.Add(new Token(TokenKind.End, string.Empty, _line));
    }

    private void AddText(string text)
    {
        if (text.Length > 0) _tokens.Add(new Token(TokenKind.Text, text, _line));
    }

    private static int Count(string s, int from, int to)
    {
        var n = 0;
        for (var i = from; i < to; i++) if (s[i] == '\n') n++;
        return n;
    }

    private int IndexOfOpen(int from)
    {
        for (var i = from; i < _src.Length - 1; i++)
        {
            if (_src[i] == '{' && _src[i + 1] is '{' or '%' or '#') return i;
        }
        return -1;
    }

    /// <summary>After a closing delimiter: the whitespace rules that apply to the text that follows.</summary>
    private void AfterClose(bool strip, bool block, bool keepNewline)
    {
        _stripNextLeading = strip;
        _trimNextNewline = block && !strip && !keepNewline;
        // The next tag starts a line when what this tag leaves behind it ends a line.
        var next = _pos;
        if (_stripNextLeading)
        {
            var before = next;
            while (next < _src.Length && char.IsWhiteSpace(_src[next])) next++;
            _lineStarting = next > before && _src[next - 1] == '\n';
        }
        else
        {
            _lineStarting = _trimNextNewline && next < _src.Length && _src[next] == '\n';
        }
    }

    private void SkipComment(int open)
    {
        var end = _src.IndexOf("#}", _pos, StringComparison.Ordinal);
        if (end < 0) throw new TemplateSyntaxException("unclosed comment '{#'", _line);
        var strip = end > _pos && _src[end - 1] == '-';
        _line += Count(_src, _pos, end);
        _pos = end + 2;
        AfterClose(strip, block: true, keepNewline: false);
    }

    private bool IsRawStart()
    {
        var i = _pos;
        while (i < _src.Length && char.IsWhiteSpace(_src[i])) i++;
        if (string.CompareOrdinal(_src, i, "raw", 0, 3) != 0) return false;
        i += 3;
        while (i < _src.Length && char.IsWhiteSpace(_src[i])) i++;
        return i < _src.Length && (_src[i] == '%' || _src[i] is '-' or '+' && i + 1 < _src.Length && _src[i + 1] == '%');
    }

    private void LexRaw()
    {
        var close = _src.IndexOf("%}", _pos, StringComparison.Ordinal);
        var strip = _src[close - 1] == '-';
        _pos = close + 2;
        AfterClose(strip, block: true, keepNewline: _src[close - 1] == '+');
        // Find {% endraw %} (with optional - markers).
        var search = _pos;
        while (true)
        {
            var open = _src.IndexOf("{%", search, StringComparison.Ordinal);
            if (open < 0) throw new TemplateSyntaxException("'raw' without 'endraw'", _line);
            var i = open + 2;
            var stripBefore = i < _src.Length && _src[i] == '-';
            if (stripBefore || i < _src.Length && _src[i] == '+') i++;
            while (i < _src.Length && char.IsWhiteSpace(_src[i])) i++;
            if (string.CompareOrdinal(_src, i, "endraw", 0, 6) == 0)
            {
                i += 6;
                while (i < _src.Length && char.IsWhiteSpace(_src[i])) i++;
                var stripAfter = i < _src.Length && _src[i] == '-';
                if (stripAfter || i < _src.Length && _src[i] == '+') i++;
                if (string.CompareOrdinal(_src, i, "%}", 0, 2) != 0) throw new TemplateSyntaxException("malformed 'endraw'", _line);
                var text = _src[_pos..open];
                if (_stripNextLeading) text = text.TrimStart();
                else if (_trimNextNewline && text.StartsWith('\n')) text = text[1..];
                if (stripBefore) text = text.TrimEnd();
                AddText(text);
                _line += Count(_src, _pos, i);
                _pos = i + 2;
                AfterClose(stripAfter, block: true, keepNewline: _src[i - 1] == '+');
                return;
            }
            search = open + 2;
        }
    }

    /// <summary>Tokens up to <paramref name="close"/> (outside brackets and strings), then the whitespace rule it sets.</summary>
    private void LexTag(string close, TokenKind endKind)
    {
        var depth = 0;
        while (true)
        {
            if (_pos >= _src.Length) throw new TemplateSyntaxException($"tag not closed with '{close}'", _line);
            var c = _src[_pos];
            if (c == '\n')
            {
                _line++;
                _pos++;
                continue;
            }
            if (char.IsWhiteSpace(c))
            {
                _pos++;
                continue;
            }
            if (depth == 0)
            {
                if (c is '-' or '+' && string.CompareOrdinal(_src, _pos + 1, close, 0, 2) == 0)
                {
                    _tokens.Add(new Token(endKind, close, _line));
                    _pos += 3;
                    AfterClose(strip: c == '-', block: endKind == TokenKind.BlockEnd, keepNewline: c == '+');
                    return;
                }
                if (string.CompareOrdinal(_src, _pos, close, 0, 2) == 0)
                {
                    _tokens.Add(new Token(endKind, close, _line));
                    _pos += 2;
                    AfterClose(strip: false, block: endKind == TokenKind.BlockEnd, keepNewline: false);
                    return;
                }
            }
            if (c is '\'' or '"')
            {
                _tokens.Add(new Token(TokenKind.String, ReadString(c), _line));
            }
            else if (char.IsAsciiDigit(c))
            {
                ReadNumber();
            }
            else if (char.IsAsciiLetter(c) || c == '_')
            {
                var start = _pos;
                while (_pos < _src.Length && (char.IsAsciiLetterOrDigit(_src[_pos]) || _src[_pos] == '_')) _pos++;
                _tokens.Add(new Token(TokenKind.Name, _src[start.._pos], _line));
            }
            else
            {
                var op = ReadOperator();
                if (op is "(" or "[" or "{") depth++;
                else if (op is ")" or "]" or "}") depth = Math.Max(0, depth - 1);
                _tokens.Add(new Token(TokenKind.Operator, op, _line));
            }
        }
    }

    private static readonly string[] Operators =
        ["**", "//", "==", "!=", ">=", "<=", "+", "-", "*", "/", "%", "~", "<", ">", "=", ".", ",", ":", "|", "(", ")", "[", "]", "{", "}"];

    private string ReadOperator()
    {
        foreach (var op in Operators)
        {
            if (string.CompareOrdinal(_src, _pos, op, 0, op.Length) == 0)
            {
                _pos += op.Length;
                return op;
            }
        }
        throw new TemplateSyntaxException($"unexpected character '{_src[_pos]}'", _line);
    }

    private void ReadNumber()
    {
        var start = _pos;
        while (_pos < _src.Length && (char.IsAsciiDigit(_src[_pos]) || _src[_pos] == '_')) _pos++;
        var isFloat = false;
        if (_pos + 1 < _src.Length && _src[_pos] == '.' && char.IsAsciiDigit(_src[_pos + 1]))
        {
            isFloat = true;
            _pos++;
            while (_pos < _src.Length && (char.IsAsciiDigit(_src[_pos]) || _src[_pos] == '_')) _pos++;
        }
        if (_pos < _src.Length && _src[_pos] is 'e' or 'E' && _pos + 1 < _src.Length && (char.IsAsciiDigit(_src[_pos + 1]) || _src[_pos + 1] is '+' or '-'))
        {
            isFloat = true;
            _pos += 2;
            while (_pos < _src.Length && char.IsAsciiDigit(_src[_pos])) _pos++;
        }
        var text = _src[start.._pos].Replace("_", "", StringComparison.Ordinal);
        _tokens.Add(new Token(isFloat ? TokenKind.Float : TokenKind.Integer, text, _line));
    }

    /// <summary>A quoted string with Python's escapes (<c>\n \t \\ \' \" \xNN \uNNNN</c>; unknown escapes kept as written).</summary>
    private string ReadString(char quote)
    {
        var sb = new StringBuilder();
        _pos++;
        while (true)
        {
            if (_pos >= _src.Length) throw new TemplateSyntaxException("unterminated string", _line);
            var c = _src[_pos++];
            if (c == quote) return sb.ToString();
            if (c == '\n') _line++;
            if (c != '\\' || _pos >= _src.Length)
            {
                sb.Append(c);
                continue;
            }
            var e = _src[_pos++];
            switch (e)
            {
                case 'n': sb.Append('\n'); break;
                case 't': sb.Append('\t'); break;
                case 'r': sb.Append('\r'); break;
                case '0': sb.Append('\0'); break;
                case 'a': sb.Append('\a'); break;
                case 'b': sb.Append('\b'); break;
                case 'f': sb.Append('\f'); break;
                case 'v': sb.Append('\v'); break;
                case '\\': sb.Append('\\'); break;
                case '\'': sb.Append('\''); break;
                case '"': sb.Append('"'); break;
                case '\n': _line++; break;
                case 'x' or 'u' or 'U':
                    var n = e == 'x' ? 2 : e == 'u' ? 4 : 8;
                    if (_pos + n <= _src.Length && int.TryParse(_src.AsSpan(_pos, n), NumberStyles.HexNumber, CultureInfo.InvariantCulture, out var code))
                    {
                        sb.Append(char.ConvertFromUtf32(code));
                        _pos += n;
                    }
                    else
                    {
                        sb.Append('\\').Append(e);
                    }
                    break;
                default: sb.Append('\\').Append(e); break;
            }
        }
    }
}

