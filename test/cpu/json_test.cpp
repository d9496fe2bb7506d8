#include <gtest/gtest.h>

#include "pgolf/core/json.hpp"

namespace pgolf::json {
namespace {

TEST(Json, ParsesTheReferenceJsonlShape) {
  const Value v = parse(R"({"text": "Caf\u00e9 \ud83d\ude00 line\nnext \"q\"", "id": 17, "score": -1.5e2, "ok": true, "x": null, "frac": 2.5})");
  EXPECT_EQ(v.at("text").as_string(), "Caf\xC3\xA9 \xF0\x9F\x98\x80 line\nnext \"q\"");
  EXPECT_EQ(v.at("id").as_int(), 17);
  EXPECT_EQ(v.at("score").as_number(), -150.0);
  EXPECT_TRUE(v.at("ok").as_bool());
  EXPECT_TRUE(v.at("x").is_null());
  EXPECT_EQ(v.find("missing"), nullptr);
  EXPECT_THROW(v.at("missing"), Error);
  EXPECT_THROW(v.at("frac").as_int(), Error);
}

TEST(Json, RoundTripsThroughDump) {
  const Value v = parse(R"({"b":[1,2.5,"s\t",{"k":false}],"a":{"__metadata__":{"x":"y"}},"big":1099511627776})");
  EXPECT_EQ(dump(v), R"({"a":{"__metadata__":{"x":"y"}},"b":[1,2.5,"s\t",{"k":false}],"big":1099511627776})");
  EXPECT_EQ(dump(parse(dump(v))), dump(v));
}

TEST(Json, RejectsMalformedInputWithAnOffset) {
  for (const char* bad : {"{", "[1,]", "{\"a\" 1}", "\"abc", "01", "1.", "-", "tru", "\"\\ud800\"", "\"\\q\"", "{} x",
                          "\"a\x01\""}) {
    try {
      parse(bad);
      ADD_FAILURE() << "accepted: " << bad;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("JSON parse error at byte"), std::string::npos) << e.what();
    }
  }
  std::string deep(1000, '[');
  EXPECT_THROW(parse(deep), Error);
}

}  // namespace
}  // namespace pgolf::json
