// Browser form uploads made with the AWS SDK for JavaScript v3's
// createPresignedPost, posted as a browser would (fetch and FormData).
//
//   node js_presigned_post.mjs ENDPOINT ACCESS_KEY SECRET_KEY BUCKET
//
// Needs NODE_PATH to hold @aws-sdk/client-s3 and @aws-sdk/s3-presigned-post
// (tests/jssdk). Prints one JSON line: for each case, the status and S3
// error code of the POST and what a HeadObject of its key found afterwards.
import { createRequire } from "node:module";
import { createHash } from "node:crypto";

const require = createRequire(import.meta.url);
const { S3Client, HeadObjectCommand, GetObjectCommand } = require("@aws-sdk/client-s3");
const { createPresignedPost } = require("@aws-sdk/s3-presigned-post");

const [endpoint, accessKeyId, secretAccessKey, bucket] = process.argv.slice(2);
const client = new S3Client({
  endpoint,
  region: "us-east-1",
  forcePathStyle: true,
  credentials: { accessKeyId, secretAccessKey },
});

/** A policy for `Key`: at most `max` bytes, a text/ content type, a given
 * metadata value, and a 201 with S3's XML on success. */
function presign(Key, max) {
  return createPresignedPost(client, {
    Bucket: bucket,
    Key,
    Conditions: [
      ["content-length-range", 1, max],
      ["starts-with", "$Content-Type", "text/"],
      { "x-amz-meta-origin": "js-sdk" },
    ],
    Fields: {
      "Content-Type": "text/plain",
      "x-amz-meta-origin": "js-sdk",
      success_action_status: "201",
    },
    Expires: 600,
  });
}

/** Posts `fields` (overridden by `changes`) and `body` as the form's file. */
async function post({ url, fields }, body, changes = {}) {
  const form = new FormData();
  for (const [k, v] of Object.entries({ ...fields, ...changes })) form.append(k, v);
  form.append("file", new Blob([body]), "upload.txt");
  const r = await fetch(url, { method: "POST", body: form });
  const text = await r.text();
  const code = /<Code>([^<]*)<\/Code>/.exec(text);
  const key = /<Key>([^<]*)<\/Key>/.exec(text);
  return { status: r.status, code: code && code[1], key: key && key[1] };
}

/** What HeadObject finds at `Key`: its size, type and metadata, or null. */
async function head(Key) {
  try {
    const h = await client.send(new HeadObjectCommand({ Bucket: bucket, Key }));
    return { size: h.ContentLength, type: h.ContentType, origin: h.Metadata.origin };
  } catch (e) {
    if (e.$metadata && e.$metadata.httpStatusCode === 404) return null;
    throw e;
  }
}

const body = Buffer.from("posted by the AWS SDK for JavaScript\n".repeat(100));
const out = {};

const ok = await presign("js/accepted.txt", 1 << 20);
out.accepted = await post(ok, body);
out.accepted.head = await head("js/accepted.txt");
const got = await client.send(new GetObjectCommand({ Bucket: bucket, Key: "js/accepted.txt" }));
const bytes = Buffer.from(await got.Body.transformToByteArray());
out.accepted.same = createHash("sha256").update(bytes).digest("hex") ===
  createHash("sha256").update(body).digest("hex");

const small = await presign("js/too-large.txt", 100);
out.too_large = await post(small, body);
out.too_large.head = await head("js/too-large.txt");

const typed = await presign("js/wrong-type.txt", 1 << 20);
out.wrong_type = await post(typed, body, { "Content-Type": "image/png" });
out.wrong_type.head = await head("js/wrong-type.txt");

const keyed = await presign("js/signed-key.txt", 1 << 20);
out.other_key = await post(keyed, body, { key: "js/other-key.txt" });
out.other_key.head = await head("js/other-key.txt");

const forged = await presign("js/forged.txt", 1 << 20);
out.forged = await post(forged, body, { "x-amz-meta-origin": "someone-else" });
out.forged.head = await head("js/forged.txt");

console.log(JSON.stringify(out));
