// The wire schema compiles into a library and round-trips through Cap'n Proto's flat encoding.
#include <capnp/message.h>
#include <capnp/schema.h>
#include <capnp/serialize.h>
#include <gtest/gtest.h>

#include "schema/troupe.capnp.h"

TEST(Schema, JobRoundTripsThroughFlatArray) {
  capnp::MallocMessageBuilder b;
  auto job = b.initRoot<troupe::wire::Job>();
  job.setProtocolVersion(troupe::wire::PROTOCOL_VERSION);
  job.setModel("stories260K");
  job.getPrompt().setText("Once upon a time");
  job.getSampling().setTemperature(0.7f);
  job.getSampling().setMaxTokens(32);
  auto words = capnp::messageToFlatArray(b);

  capnp::FlatArrayMessageReader r(words.asPtr());
  auto got = r.getRoot<troupe::wire::Job>();
  EXPECT_EQ(got.getProtocolVersion(), 1u);
  EXPECT_EQ(std::string(got.getModel().cStr()), "stories260K");
  ASSERT_TRUE(got.getPrompt().isText());
  EXPECT_EQ(std::string(got.getPrompt().getText().cStr()), "Once upon a time");
  EXPECT_FLOAT_EQ(got.getSampling().getTemperature(), 0.7f);
  EXPECT_FLOAT_EQ(got.getSampling().getTopP(), 1.0f);  // schema default
}

TEST(Schema, ErrorCarriesOneOfFourKinds) {
  capnp::MallocMessageBuilder b;
  auto e = b.initRoot<troupe::wire::Error>();
  e.setKind(troupe::wire::ErrorKind::OVERLOADED);
  e.setMessage("queue full");
  EXPECT_EQ(e.asReader().getKind(), troupe::wire::ErrorKind::OVERLOADED);
  EXPECT_EQ(capnp::Schema::from<troupe::wire::ErrorKind>().getEnumerants().size(), 4u);
}
