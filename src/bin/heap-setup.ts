// Imported first by the gateway's bin, so it runs before any other module allocates.
import { holdYoungGeneration } from '../server/memory.js';

holdYoungGeneration();
