using System.Text.Json.Nodes;

namespace Serving.Inference.Tests.Constraints;

/// <summary>
/// The schemas structured output is tested on: hand-written ones covering every supported feature, and schemas
/// generated (seeded) from the building blocks below — leaves of every kind nested into objects (required and
/// optional properties, additionalProperties false), arrays with minItems/maxItems, unions and $defs references.
/// </summary>
internal static class SchemaCorpus
{
    public static readonly string[] Leaves =
    [
        """{"type":"string"}""",
        """{"type":"integer"}""",
        """{"type":"number"}""",
        """{"type":"boolean"}""",
        """{"type":"null"}""",
        """{"type":"string","maxLength":8}""",
        """{"type":"string","minLength":2,"maxLength":5}""",
        """{"type":"integer","minimum":-5,"maximum":120}""",
        """{"type":"integer","exclusiveMinimum":7}""",
        """{"type":"number","minimum":0,"maximum":10}""",
        """{"type":"number","exclusiveMinimum":0,"exclusiveMaximum":3}""",
        """{"type":"number","minimum":-4,"exclusiveMaximum":-1}""",
        """{"enum":["red","green","blue"]}""",
        """{"const":"fixed"}""",
        """{"enum":[1,"two",null,true,2.5]}""",
        """{"type":"string","format":"date"}""",
        """{"type":"string","format":"date-time"}""",
        """{"type":"string","format":"time"}""",
        """{"type":"string","format":"email"}""",
        """{"type":"string","format":"uuid"}""",
        """{"type":"string","format":"ipv4"}""",
        """{"type":"string","format":"uri"}""",
        """{"type":"string","format":"not-a-known-format"}""",
        """{"type":"string","pattern":"^[A-Z]{2}-[0-9]{3}$"}""",
        """{"type":"string","pattern":"ab+c"}""",
        """{"type":"string","pattern":"^(\\d{3}) [a-z]+$"}""",
        """{"type":["string","null"]}""",
        """{"anyOf":[{"type":"integer"},{"type":"string","maxLength":3}]}""",
        """{"oneOf":[{"type":"boolean"},{"type":"integer","minimum":0}]}""",
        """{"type":"array","items":{"type":"integer"},"maxItems":3}""",
    ];

    public static readonly string[] HandWritten =
    [
        """{"type":"object","properties":{"name":{"type":"string","maxLength":20},"age":{"type":"integer","minimum":0,"maximum":150},"email":{"type":"string","format":"email"}},"required":["name","age"],"additionalProperties":false}""",
        """{"type":"object","properties":{"id":{"type":"string","format":"uuid"},"created":{"type":"string","format":"date-time"},"tags":{"type":"array","items":{"type":"string","maxLength":6},"minItems":1,"maxItems":4}},"required":["id","created","tags"]}""",
        """{"$defs":{"node":{"type":"object","properties":{"value":{"type":"integer"},"children":{"type":"array","items":{"$ref":"#/$defs/node"},"maxItems":2}},"required":["value"]}},"$ref":"#/$defs/node"}""",
        """{"definitions":{"point":{"type":"object","properties":{"x":{"type":"number"},"y":{"type":"number"}},"required":["x","y"],"additionalProperties":false}},"type":"object","properties":{"from":{"$ref":"#/definitions/point"},"to":{"$ref":"#/definitions/point"}},"required":["from","to"]}""",
        """{"oneOf":[{"type":"object","properties":{"kind":{"const":"circle"},"r":{"type":"number","minimum":0}},"required":["kind","r"]},{"type":"object","properties":{"kind":{"const":"square"},"side":{"type":"integer","minimum":1,"maximum":9}},"required":["kind","side"]}]}""",
        """{"type":"object","properties":{"name":{"const":"get_weather"},"arguments":{"type":"object","properties":{"city":{"type":"string","maxLength":12},"unit":{"enum":["c","f"]}},"required":["city"]}},"required":["name","arguments"]}""",
        """{"type":"array","prefixItems":[{"type":"string","maxLength":4},{"type":"integer"}],"items":false,"minItems":2}""",
        """{"type":"array","items":[{"type":"boolean"},{"type":"null"}],"additionalItems":{"type":"integer"},"maxItems":4}""",
        """{"allOf":[{"type":"object","properties":{"a":{"type":"integer"}},"required":["a"]},{"properties":{"b":{"type":"boolean"}},"required":["b"]}]}""",
        """{"type":"object","properties":{"when":{"type":"string","format":"date"},"count":{"type":"integer","exclusiveMinimum":0,"exclusiveMaximum":10},"ratio":{"type":"number","minimum":-1,"maximum":1}},"required":["when","count","ratio"],"additionalProperties":false}""",
        """{"type":"object","properties":{"code":{"type":"string","pattern":"^[A-F0-9]{4}$"},"ip":{"type":"string","format":"ipv4"},"at":{"type":"string","format":"time"}},"required":["code","ip","at"]}""",
        """{"type":"object","properties":{"list":{"type":"array","items":{"type":"object","properties":{"k":{"type":"string","minLength":1,"maxLength":3},"v":{"type":["integer","null"]}},"required":["k","v"]},"minItems":2,"maxItems":3}},"required":["list"]}""",
        """{"type":"object"}""",
        """{"oneOf":[{"type":"object","properties":{"a":{"type":"integer"},"c":{"type":"boolean"}},"required":["a"]},{"type":"object","properties":{"b":{"type":"string","maxLength":3}},"required":["b"]}]}""",
        """{"type":"array","items":{"anyOf":[{"type":"string","format":"uuid"},{"type":"integer","minimum":100,"maximum":999}]},"minItems":1,"maxItems":2}""",
        """{"type":"object","properties":{"flag":{"type":"boolean"},"nothing":{"type":"null"},"level":{"enum":["low","mid","high"]}},"required":["flag","nothing","level"],"additionalProperties":false}""",
        """{"$defs":{"list":{"anyOf":[{"type":"null"},{"type":"object","properties":{"head":{"type":"integer","minimum":0,"maximum":9},"tail":{"$ref":"#/$defs/list"}},"required":["head","tail"],"additionalProperties":false}]}},"$ref":"#/$defs/list"}""",
    ];

    /// <summary>Hand-written schemas plus <paramref name="generated"/> generated ones.</summary>
    public static List<string> All(int generated, int seed = 7)
    {
        var random = new Random(seed);
        var list = new List<string>(HandWritten);
        for (var i = 0; i < generated; i++) list.Add(Generate(random, depth: 0).ToJsonString());
        return list;
    }

    private static JsonNode Leaf(Random r) => JsonNode.Parse(Leaves[r.Next(Leaves.Length)])!;

    private static JsonNode Generate(Random r, int depth)
    {
        var pick = depth >= 2 ? 0 : r.Next(6);
        if (pick == 5 && depth > 0) pick = 0; // $ref targets live at the root
        switch (pick)
        {
            case 0 or 1 or 2:
                {
                    var props = new JsonObject();
                    var required = new JsonArray();
                    var n = 1 + r.Next(4);
                    for (var k = 0; k < n; k++)
                    {
                        var name = $"p{k}_{(char)('a' + r.Next(26))}";
                        props[name] = depth < 2 && r.Next(4) == 0 ? Generate(r, depth + 1) : Leaf(r);
                        if (r.Next(2) == 0) required.Add(name);
                    }
                    var o = new JsonObject { ["type"] = "object", ["properties"] = props, ["required"] = required };
                    if (r.Next(2) == 0) o["additionalProperties"] = false;
                    return o;
                }
            case 3:
                {
                    var min = r.Next(3);
                    var a = new JsonObject { ["type"] = "array", ["items"] = r.Next(2) == 0 ? Leaf(r) : Generate(r, depth + 1), ["minItems"] = min };
                    a["maxItems"] = min + r.Next(3);
                    return a;
                }
            case 4:
                return new JsonObject { ["anyOf"] = new JsonArray(Leaf(r), Generate(r, depth + 1)) };
            default:
                {
                    var def = Generate(r, depth + 1);
                    return new JsonObject
                    {
                        ["$defs"] = new JsonObject { ["item"] = def },
                        ["type"] = "object",
                        ["properties"] = new JsonObject { ["first"] = new JsonObject { ["$ref"] = "#/$defs/item" }, ["more"] = new JsonObject { ["type"] = "array", ["items"] = new JsonObject { ["$ref"] = "#/$defs/item" }, ["maxItems"] = 2 } },
                        ["required"] = new JsonArray("first"),
                    };
                }
        }
    }
}
