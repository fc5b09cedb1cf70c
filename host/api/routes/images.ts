import Router from "@koa/router";
import { createHash } from "node:crypto";
import { ApiError } from "../errors.js";
import { respond } from "../middleware/envelope.js";

/** Where the manifests of the images this server has come from (ImageCatalog.manifestFile). */
export interface ImageManifestSource {
  /** The manifest.json of image `id` as stored (text) and parsed; null when there is none. */
  manifestFile(id: string): Promise<{ text: string; manifest: unknown } | null>;
}

/**
 * GET /v1/images/{id}/manifest (extension): the manifest of an image this server runs, for a tenant to
 * compare with the one it built, not to trust. `sha256` is over the file's bytes, as `make image` prints it.
 */
export function imageRoutes(deps: { images?: ImageManifestSource }): Router {
  const router = new Router();
  router.get("/v1/images/:id/manifest", async (ctx) => {
    const id = ctx.params.id!;
    const found = deps.images ? await deps.images.manifestFile(id) : null;
    if (!found) throw new ApiError("not_found", `image ${id.slice(0, 64)} not found`);
    respond(ctx, 200, { image_id: id, sha256: createHash("sha256").update(found.text, "utf8").digest("hex"), manifest: found.manifest });
  });
  return router;
}
